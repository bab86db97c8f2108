"""The LLaVA model that reads the image and the question and yields the ``<SEG>`` query state.

The answer turn ``<SEG>.`` is teacher-forced, so scoring needs one forward pass and no
generation; the language-model loss on those answer tokens is the release's CE term. Two prompt
styles: the processor's chat template (any Hub LLaVA), or the release's hand-built ids
(``prompt_style="official"``, for the converted release checkpoint; see official-checkpoint.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import (
    AutoProcessor,
    CLIPImageProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    ProcessorMixin,
)

from llmseg.model.config import VLMConfig
from llmseg.model.tokenizer import build_word_tokenizer, words_of

# The llava_v1 system prompt of the release, followed by its user tag.
OFFICIAL_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions. USER:"
)
ANSWER_SUFFIX = "."  # the teacher-forced answer is "<SEG>." then end of sequence
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class VLMOutput:
    """What the selection module reads from the VLM.

    seg_hidden: (B, H) last-layer (final-norm) state at ``config.query_position``.
    token_hidden: (B, T, H) last-layer states of the query's own text tokens, zero-padded.
    token_valid: (B, T) bool, True where ``token_hidden`` holds a token.
    lm_loss: scalar CE of the teacher-forced answer tokens, or None when not asked for.
    """

    seg_hidden: torch.Tensor
    token_hidden: torch.Tensor
    token_valid: torch.Tensor
    lm_loss: torch.Tensor | None


@dataclass
class _Prompt:
    """Token ids of one prompt (answer included or not) and where its parts sit."""

    input_ids: list[int]
    query_positions: list[int]  # indices of the query's own text tokens
    prompt_length: int  # tokens before the answer; the answer's first token is <SEG>


def is_sentence(query: str) -> bool:
    """Guess ReasonSeg's ``is_sentence`` flag: a full sentence ends in '.', '?' or '!'; a phrase does not."""
    return query.rstrip().endswith((".", "?", "!"))


def _check_query(query: Any) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ValueError("the query is empty: ask a question or name the object to segment")
    return query.strip()


class VLM(nn.Module):
    """A ``LlavaForConditionalGeneration`` with a ``<SEG>`` token, LoRA (or full) fine-tuning and a processor."""

    def __init__(self, config: VLMConfig, *, model: LlavaForConditionalGeneration, processor: ProcessorMixin) -> None:
        super().__init__()
        self.config = config
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.seg_token_id = _add_seg_token(model, self.tokenizer, config.seg_token)
        if config.finetune == "lora":
            model = _apply_lora(model, config, self.seg_token_id)
        self.model = model

    @classmethod
    def from_config(cls, config: VLMConfig, device: str | torch.device = "cpu") -> VLM:
        """Load ``config.llava`` with transformers' loaders, or build a fresh model from ``config.llava_config``."""
        if config.llava is not None:
            model = _load_llava(config, device)
            processor = _load_processor(config)
        else:
            processor = _load_processor(config)
            model = _build_llava(config, processor.tokenizer).to(device)
        return cls(config, model=model, processor=processor)

    @property
    def llava(self) -> LlavaForConditionalGeneration:
        """The underlying LLaVA (LoRA layers, if any, are injected into it in place)."""
        model = self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    @property
    def hidden_size(self) -> int:
        return self.llava.config.text_config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.llava.parameters()).device

    @property
    def image_token_count(self) -> int:
        """Image placeholder tokens per image: one per vision patch, plus CLS with the "full" strategy."""
        config = self.llava.config
        count = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
        return count + 1 if config.vision_feature_select_strategy == "full" else count

    def image_features(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """(B, N, H) projected vision-tower features: depend on the image only, so callers may cache them."""
        pixel_values = self._pixel_values([_to_pil(image) for image in images])
        features = self.llava.model.get_image_features(pixel_values=pixel_values).pooler_output
        return torch.stack(list(features))

    def encode(
        self,
        images: Sequence[Image.Image | np.ndarray],
        queries: Sequence[str],
        *,
        sentences: Sequence[bool] | None = None,
        with_loss: bool = False,
        image_features: torch.Tensor | None = None,
    ) -> VLMOutput:
        """One teacher-forced pass over ``prompt + "<SEG>."`` for each (image, query) pair.

        images: PIL images or HWC uint8 RGB arrays. sentences: ReasonSeg's ``is_sentence`` per
        query (picks the long or short question template); guessed from punctuation when None.
        with_loss: also return the CE of the answer tokens (``config.ce_on_answer``).
        image_features: ``self.image_features(images)`` computed earlier, to skip the vision tower.
        """
        if len(images) != len(queries) or not queries:
            raise ValueError(f"need one image per query, got {len(images)} images and {len(queries)} queries")
        queries = [_check_query(query) for query in queries]
        sentences = [is_sentence(query) for query in queries] if sentences is None else list(sentences)
        prompts = [
            self._prompt(self._question(query, sentence), query, with_answer=True)
            for query, sentence in zip(queries, sentences, strict=True)
        ]
        input_ids, attention_mask = self._pad([prompt.input_ids for prompt in prompts])
        if image_features is None:
            image_features = self.image_features(images)
        image_slots = input_ids == self.llava.config.image_token_id
        if image_features.shape[:2] != (len(prompts), self.image_token_count):
            raise ValueError(
                f"{self.image_token_count} image tokens per prompt but image features of shape "
                f"{tuple(image_features.shape)}: pass one feature row per image token"
            )
        embeddings = self.llava.get_input_embeddings()(input_ids)
        embeddings = embeddings.masked_scatter(image_slots[..., None], image_features.to(embeddings.dtype))
        hidden = self.llava.model(inputs_embeds=embeddings, attention_mask=attention_mask).last_hidden_state

        rows = torch.arange(len(prompts), device=hidden.device)
        offset = 1 if self.config.query_position == "before_seg" else 0
        seg_hidden = hidden[rows, torch.tensor([p.prompt_length - offset for p in prompts], device=hidden.device)]
        width = max(len(p.query_positions) for p in prompts)
        token_index = torch.zeros(len(prompts), width, dtype=torch.long, device=hidden.device)
        token_valid = torch.zeros(len(prompts), width, dtype=torch.bool, device=hidden.device)
        for row, prompt in enumerate(prompts):
            token_index[row, : len(prompt.query_positions)] = torch.tensor(prompt.query_positions)
            token_valid[row, : len(prompt.query_positions)] = True
        token_hidden = hidden[rows[:, None], token_index] * token_valid[..., None]

        lm_loss = self._answer_loss(hidden, input_ids, prompts) if with_loss and self.config.ce_on_answer else None
        return VLMOutput(seg_hidden=seg_hidden, token_hidden=token_hidden, token_valid=token_valid, lm_loss=lm_loss)

    @torch.no_grad()
    def generate_answer(self, image: Image.Image | np.ndarray, query: str, max_new_tokens: int = 32) -> str:
        """A free-text answer to ``query`` (greedy decoding), for the demo; the mask does not depend on it."""
        query = _check_query(query)
        prompt = self._prompt(query, query, with_answer=False)
        input_ids = torch.tensor([prompt.input_ids], device=self.device)
        generated = self.llava.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pixel_values=self._pixel_values([_to_pil(image)]),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return self.tokenizer.decode(generated[0, input_ids.shape[1] :], skip_special_tokens=True).strip()

    def build_official_prompt_ids(self, query: str, is_sentence: bool) -> list[int]:
        """The release's prompt ids up to and including the teacher-forced ``[SEG].</s>``.

        ``[bos] + sp(system + " USER:") + <im_start> + <im_patch> x N + <im_end> +
        sp(question + " ASSISTANT:") + [SEG] + sp(".") + </s>``; the old slow tokenizer dropped the
        "\\n" after ``<im_end>`` and the spaces around added tokens, hence pieces encoded apart.
        """
        question = self._question(_check_query(query), is_sentence)
        return self._official_prompt(question, query, with_answer=True).input_ids

    # -- prompt construction ------------------------------------------------------------------

    def _question(self, query: str, sentence: bool) -> str:
        template = self.config.long_query_template if sentence else self.config.short_query_template
        return template.format(query=query)

    def _template_for(self, question: str, query: str) -> str:
        """The template that produced ``question`` from ``query`` (the raw query for free answers)."""
        for template in (self.config.long_query_template, self.config.short_query_template):
            if template.format(query=query) == question:
                return template
        return "{query}"

    def _prompt(self, question: str, query: str, *, with_answer: bool) -> _Prompt:
        if self.config.prompt_style == "official":
            return self._official_prompt(question, query, with_answer=with_answer)
        return self._chat_prompt(question, query, with_answer=with_answer)

    def _chat_prompt(self, question: str, query: str, *, with_answer: bool) -> _Prompt:
        """Prompt through the processor's chat template; query tokens located by character offsets.

        The image placeholder is repeated once per image token, as the processor does, but with
        the count the model itself produces (no off-by-one from a processor setting).
        """
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        image_token = self.processor.image_token
        text = text.replace(image_token, image_token * self.image_token_count)
        question_start = text.rfind(question)
        if question_start < 0:
            raise ValueError("the processor's chat template rewrites the question text; use prompt_style='official'")
        encoded = self.tokenizer(text, return_offsets_mapping=True)
        input_ids = list(encoded["input_ids"])
        if input_ids.count(self.llava.config.image_token_id) != self.image_token_count:
            raise ValueError(f"the chat template must place one {image_token} in the prompt; it placed none or more")
        start = question_start + self._template_for(question, query).index("{query}")
        query_positions = _tokens_in_span(encoded["offset_mapping"], start, start + len(query))
        return self._with_answer(input_ids, query_positions, with_answer)

    def _official_prompt(self, question: str, query: str, *, with_answer: bool) -> _Prompt:
        tokenizer = self.tokenizer
        im_start, im_end = tokenizer.convert_tokens_to_ids(["<im_start>", "<im_end>"])
        if tokenizer.unk_token_id in (im_start, im_end) or None in (im_start, im_end):
            raise ValueError(
                "prompt_style='official' needs a tokenizer with <im_start> and <im_end> (the converted release's)"
            )
        head = [tokenizer.bos_token_id, *tokenizer.encode(OFFICIAL_SYSTEM, add_special_tokens=False)]
        head += [im_start, *[self.llava.config.image_token_id] * self.image_token_count, im_end]
        middle = tokenizer(question + " ASSISTANT:", add_special_tokens=False, return_offsets_mapping=True)
        start = self._template_for(question, query).index("{query}")
        query_positions = [len(head) + i for i in _tokens_in_span(middle["offset_mapping"], start, start + len(query))]
        return self._with_answer(head + list(middle["input_ids"]), query_positions, with_answer)

    def _with_answer(self, prompt_ids: list[int], query_positions: list[int], with_answer: bool) -> _Prompt:
        if not query_positions:
            raise ValueError("the query has no tokens the model can read; use words, not only symbols")
        answer: list[int] = []
        if with_answer:
            suffix = self.tokenizer.encode(ANSWER_SUFFIX, add_special_tokens=False)
            answer = [self.seg_token_id, *suffix, self.tokenizer.eos_token_id]
        return _Prompt(prompt_ids + answer, query_positions, len(prompt_ids))

    # -- tensors ------------------------------------------------------------------------------

    def _pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad to one length; positions are read explicitly, so padding side does not matter."""
        length = max(len(ids) for ids in sequences)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        pixel_values = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        dtype = self.llava.model.vision_tower.dtype
        return pixel_values.to(device=self.device, dtype=dtype)

    def _answer_loss(self, hidden: torch.Tensor, input_ids: torch.Tensor, prompts: list[_Prompt]) -> torch.Tensor:
        """CE of the answer tokens, each predicted from the state one position earlier."""
        rows, positions = [], []
        for row, prompt in enumerate(prompts):
            for position in range(prompt.prompt_length, len(prompt.input_ids)):
                rows.append(row)
                positions.append(position)
        rows_t = torch.tensor(rows, device=hidden.device)
        positions_t = torch.tensor(positions, device=hidden.device)
        logits = self.llava.lm_head(hidden[rows_t, positions_t - 1])
        return F.cross_entropy(logits.float(), input_ids[rows_t, positions_t])


def _tokens_in_span(offsets: Any, start: int, end: int) -> list[int]:
    """Indices of tokens whose character span overlaps ``[start, end)`` (special tokens span nothing)."""
    spans = offsets.tolist() if hasattr(offsets, "tolist") else offsets
    return [index for index, (left, right) in enumerate(spans) if right > left and left < end and right > start]


def _to_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    return Image.fromarray(np.asarray(image, dtype=np.uint8))


def _load_processor(config: VLMConfig) -> ProcessorMixin:
    """The Hub/local processor named by the config, or a word-level one for a model built from a config."""
    source = config.processor or config.llava
    if source is not None:
        try:
            return AutoProcessor.from_pretrained(source)
        except OSError as error:
            raise ValueError(
                f"cannot load the LLaVA processor {source!r} ({error}); download the model "
                "(e.g. `hf download llava-hf/llava-1.5-7b-hf`) and pass its folder, or use the `shapes` preset"
            ) from None
    vision = LlavaConfig(**config.llava_config).vision_config
    texts = [*config.vocabulary, config.short_query_template, config.long_query_template, ANSWER_SUFFIX]
    tokenizer = build_word_tokenizer(words_of(texts), seg_token=config.seg_token)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": vision.image_size}, crop_size={"height": vision.image_size, "width": vision.image_size}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision.patch_size,
        vision_feature_select_strategy=config.llava_config.get("vision_feature_select_strategy", "default"),
        chat_template=tokenizer.chat_template,
        num_additional_image_tokens=1,  # CLIP's CLS token; "default" then drops it again
    )


def _build_llava(config: VLMConfig, tokenizer: Any) -> LlavaForConditionalGeneration:
    """A randomly initialised LLaVA from ``config.llava_config``, its vocabulary sized to the tokenizer."""
    settings = dict(config.llava_config)
    settings["text_config"] = {**settings.get("text_config", {}), "vocab_size": len(tokenizer)}
    settings["image_token_index"] = tokenizer.convert_tokens_to_ids("<image>")
    llava_config = LlavaConfig(**settings)
    model = LlavaForConditionalGeneration(llava_config)
    if config.word_embedding_std is not None:
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0.0, config.word_embedding_std)
    return model.to(DTYPES[config.dtype])


def _load_llava(config: VLMConfig, device: str | torch.device) -> LlavaForConditionalGeneration:
    """``from_pretrained`` on a Hub id or folder, in ``config.dtype``, optionally 8/4-bit on CUDA."""
    kwargs: dict[str, Any] = {"dtype": DTYPES[config.dtype], "device_map": {"": str(device)}}
    if config.quantization != "none":
        if not torch.cuda.is_available() or torch.device(device).type != "cuda":
            raise ValueError(
                f"vlm.quantization={config.quantization!r} needs bitsandbytes on a CUDA GPU; "
                "set it to 'none' on this machine or pass device='cuda'"
            )
        from transformers import BitsAndBytesConfig  # only quantised loading needs it

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=config.quantization == "8bit",
            load_in_4bit=config.quantization == "4bit",
            bnb_4bit_compute_dtype=DTYPES[config.dtype],
        )
    try:
        return LlavaForConditionalGeneration.from_pretrained(config.llava, **kwargs)
    except OSError as error:
        raise ValueError(
            f"cannot load LLaVA {config.llava!r} ({error}); download it (e.g. `hf download "
            "llava-hf/llava-1.5-7b-hf`) and pass its folder as vlm.llava, or use the `shapes` preset"
        ) from None


def _add_seg_token(model: LlavaForConditionalGeneration, tokenizer: Any, seg_token: str) -> int:
    """Add ``seg_token`` to the tokenizer (if new) and make sure the model has rows for it.

    A new token's input and output rows start at the mean of the existing rows, so that building
    the same base twice gives the same model (checkpoints store the rows only when they train).
    """
    known = seg_token in tokenizer.get_vocab()
    if not known:
        tokenizer.add_tokens([seg_token], special_tokens=True)
    seg_id = tokenizer.convert_tokens_to_ids(seg_token)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if not known:
        with torch.no_grad():
            for layer in {model.get_input_embeddings(), model.get_output_embeddings()}:
                layer.weight[seg_id] = layer.weight[:seg_id].float().mean(dim=0).to(layer.weight.dtype)
    return seg_id


def _apply_lora(model: LlavaForConditionalGeneration, config: VLMConfig, seg_id: int) -> nn.Module:
    """LoRA on the language model's projections (regex), plus the ``<SEG>`` rows when they train."""
    from peft import LoraConfig, get_peft_model  # only LoRA fine-tuning needs peft

    trainable_tokens = None
    if config.train_seg_embedding:
        tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        trainable_tokens = {"embed_tokens": [seg_id]} if tied else {"embed_tokens": [seg_id], "lm_head": [seg_id]}
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        trainable_token_indices=trainable_tokens,
    )
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x; nothing to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora)
