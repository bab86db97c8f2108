"""A word-level tokenizer for small VLMs trained from scratch (the ``tiny`` and ``shapes`` presets).

A real LLaVA brings its own tokenizer from the Hub; a model built from ``VLMConfig.llava_config``
needs one that costs no download and keeps its vocabulary (and so its embedding table) small.
Words are lower-cased and split on whitespace, each punctuation mark its own token; every word outside the vocabulary
becomes ``<unk>``. The chat template renders ``USER: <image>\\n{text} ASSISTANT:`` as LLaVA-1.5's.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<unk>", "<s>", "</s>"

# LLaVA-1.5's conversation layout. A message's content is a string or a list of
# {"type": "image"} / {"type": "text", "text": ...} parts, as processors' chat templates take them.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}{% else %}{{ part['text'] + ' ' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Words the chat template itself writes, and punctuation, so no prompt needs <unk> for them.
_TEMPLATE_WORDS = ("user", "assistant")
_PRE_TOKENIZER = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])


def words_of(texts: Iterable[str]) -> list[str]:
    """The lower-cased words the tokenizer would split ``texts`` into (first-seen order, no repeats)."""
    seen: dict[str, None] = {}
    for text in texts:
        for word, _ in _PRE_TOKENIZER.pre_tokenize_str(text.lower()):
            seen.setdefault(word, None)
    return list(seen)


def build_word_tokenizer(
    vocabulary: Iterable[str], *, seg_token: str = "<SEG>", image_token: str = "<image>"
) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``vocabulary`` (texts or words) plus the template words and punctuation.

    Ids: 0 ``<pad>``, 1 ``<unk>``, 2 ``<s>`` (added at the start of every encoded text),
    3 ``</s>``, 4 ``image_token``, 5 ``seg_token``, then the words in first-seen order, so the
    same vocabulary always gives the same ids.
    """
    specials = [PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, image_token, seg_token]
    if len(set(specials)) != len(specials):
        raise ValueError(f"the special tokens must differ from each other, got {specials}")
    words = words_of([*_TEMPLATE_WORDS, *string.punctuation, *vocabulary])
    vocab = {token: index for index, token in enumerate(specials)}
    for word in words:
        vocab.setdefault(word, len(vocab))

    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = _PRE_TOKENIZER
    backend.decoder = decoders.WordPiece()  # joins words with spaces, none before punctuation
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        additional_special_tokens=[image_token, seg_token],
        chat_template=CHAT_TEMPLATE,
    )
