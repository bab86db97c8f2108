"""The VLM side: word tokenizer, prompts (chat template and the release's ids), query states, answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from llmseg.model.presets import get_preset
from llmseg.model.tokenizer import build_word_tokenizer
from llmseg.model.vlm import OFFICIAL_SYSTEM, VLM, is_sentence

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((48, 64, 3), 200, np.uint8)
    image[8:24, 8:24] = (230, 30, 30)
    image[20:40, 30:56] = (30, 30, 230)
    return np.clip(image.astype(int) + rng.integers(-5, 6, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def vlm() -> VLM:
    torch.manual_seed(0)
    return VLM.from_config(get_preset("tiny").vlm).eval()


def test_word_tokenizer_is_deterministic_and_maps_unknown_words_to_unk():
    first = build_word_tokenizer(["The red circle", "a blue square"])
    second = build_word_tokenizer(["The red circle", "a blue square"])
    assert first.get_vocab() == second.get_vocab()
    ids = first("What is the RED zebra? <SEG>.").input_ids
    tokens = first.convert_ids_to_tokens(ids)
    assert tokens == ["<s>", "<unk>", "<unk>", "the", "red", "<unk>", "?", "<SEG>", "."]
    assert first.convert_tokens_to_ids("<SEG>") == 5 and first.convert_tokens_to_ids("<image>") == 4
    rendered = first.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert rendered == "USER: <image>\nhi ASSISTANT:"


def test_word_tokenizer_rejects_clashing_special_tokens():
    with pytest.raises(ValueError, match="special tokens"):
        build_word_tokenizer(["a"], seg_token="<image>")


def test_is_sentence_follows_punctuation():
    assert is_sentence("What can hold water?") and is_sentence("Find the cup.")
    assert not is_sentence("the red cup")


def test_chat_prompt_states_match_a_hand_built_prompt(vlm):
    """seg_hidden is the state that predicts <SEG>; token_hidden holds the query's own words."""
    image = scene()
    out = vlm.encode([image], ["the red square"], sentences=[False])
    tokens = ["<s>", "user", ":"] + ["<image>"] * 16
    tokens += "what is the red square in this image ? please output segmentation mask .".split()
    tokens += ["assistant", ":", "<SEG>", ".", "</s>"]
    ids = torch.tensor([vlm.tokenizer.convert_tokens_to_ids(tokens)])
    assert vlm.tokenizer.unk_token_id not in ids
    pixels = vlm.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hidden = vlm.llava.model(input_ids=ids, pixel_values=pixels).last_hidden_state[0]
    seg_index = tokens.index("<SEG>")
    torch.testing.assert_close(out.seg_hidden[0], hidden[seg_index - 1])
    query_start = tokens.index("red") - 1
    torch.testing.assert_close(out.token_hidden[0], hidden[query_start : query_start + 3])
    assert out.token_valid.tolist() == [[True, True, True]]
    assert out.lm_loss is None


def test_query_position_seg_reads_the_seg_state(vlm):
    image = scene()
    before = vlm.encode([image], ["the red square"]).seg_hidden
    vlm.config = dataclasses.replace(vlm.config, query_position="seg")
    try:
        at_seg = vlm.encode([image], ["the red square"]).seg_hidden
    finally:
        vlm.config = dataclasses.replace(vlm.config, query_position="before_seg")
    assert not torch.allclose(before, at_seg)


def test_batched_encode_matches_one_at_a_time_and_cached_image_features(vlm):
    images = [scene(0), scene(1)]
    queries = ["the red square", "Which shape is to the left of the blue square?"]
    batch = vlm.encode(images, queries, with_loss=True)
    features = vlm.image_features(images)
    cached = vlm.encode(images, queries, image_features=features)
    torch.testing.assert_close(batch.seg_hidden, cached.seg_hidden)
    for row in range(2):
        single = vlm.encode([images[row]], [queries[row]])
        torch.testing.assert_close(batch.seg_hidden[row], single.seg_hidden[0], atol=1e-5, rtol=1e-5)
        width = int(single.token_valid.sum())
        assert int(batch.token_valid[row].sum()) == width
        torch.testing.assert_close(batch.token_hidden[row, :width], single.token_hidden[0], atol=1e-5, rtol=1e-5)
        assert not batch.token_hidden[row, width:].any()
    assert batch.lm_loss is not None and batch.lm_loss.ndim == 0 and batch.lm_loss > 0


def test_image_features_must_match_the_image_tokens(vlm):
    features = vlm.image_features([scene()])
    with pytest.raises(ValueError, match="image tokens"):
        vlm.encode([scene()], ["the red square"], image_features=features[:, :-1])


@pytest.mark.parametrize("query", ["", "   ", None])
def test_empty_queries_are_rejected(vlm, query):
    with pytest.raises(ValueError, match="empty"):
        vlm.encode([scene()], [query])


def test_generate_answer_returns_text(vlm):
    answer = vlm.generate_answer(scene(), "What is red?", max_new_tokens=4)
    assert isinstance(answer, str)
    assert "<SEG>" not in answer and "<image>" not in answer


def test_official_prompt_ids_follow_the_release_layout():
    config = dataclasses.replace(get_preset("tiny").vlm, prompt_style="official", finetune="full")
    vlm = VLM.from_config(config)
    with pytest.raises(ValueError, match="im_start"):
        vlm.build_official_prompt_ids("the red square", is_sentence=False)

    tokenizer = vlm.tokenizer
    tokenizer.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    vlm.llava.resize_token_embeddings(len(tokenizer))
    sp = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    expected = [tokenizer.bos_token_id, *sp(OFFICIAL_SYSTEM)]
    expected += [tokenizer.convert_tokens_to_ids("<im_start>")] + [vlm.llava.config.image_token_id] * 16
    expected += [tokenizer.convert_tokens_to_ids("<im_end>")]
    short = sp("What is the red square in this image? Please output segmentation mask. ASSISTANT:")
    long = sp("Which shape is red? Please output segmentation mask. ASSISTANT:")
    answer = [vlm.seg_token_id, *sp("."), tokenizer.eos_token_id]
    assert vlm.build_official_prompt_ids("the red square", is_sentence=False) == expected + short + answer
    assert vlm.build_official_prompt_ids("Which shape is red?", is_sentence=True) == expected + long + answer
    out = vlm.encode([scene()], ["the red square"], sentences=[False])
    assert out.token_valid.sum() == 3


def test_quantization_needs_cuda():
    config = dataclasses.replace(get_preset("llmseg-7b").vlm, quantization="4bit")
    with pytest.raises(ValueError, match="CUDA"):
        VLM.from_config(config, device="cpu")


def test_missing_llava_folder_is_a_clear_error(tmp_path):
    config = dataclasses.replace(get_preset("llmseg-7b").vlm, llava=str(tmp_path / "missing-llava"))
    with pytest.raises(ValueError, match="download"):
        VLM.from_config(config)


def test_lora_trains_only_the_language_model_and_the_seg_rows(vlm):
    trainable = [name for name, parameter in vlm.named_parameters() if parameter.requires_grad]
    assert trainable, "LoRA should add trainable parameters"
    for name in trainable:
        assert ("language_model" in name and "lora_" in name) or "trainable_tokens_delta" in name, name
    assert any("lm_head" in name for name in trainable)  # untied output row of <SEG>
    assert not any("vision_tower" in name or "multi_modal_projector" in name for name in trainable)


def test_a_chat_template_without_the_image_is_a_clear_error(vlm, monkeypatch):
    text_only = "{% for m in messages %}{% for part in m['content'] if part['type'] == 'text' %}{{ part['text'] }}"
    monkeypatch.setattr(vlm.processor, "chat_template", text_only + "{% endfor %}{% endfor %}")
    with pytest.raises(ValueError, match="must place one <image>"):
        vlm.encode([scene()], ["the red square"])


def test_word_embedding_std_keeps_words_readable_through_a_fresh_llm():
    """With transformers' 0.02 init, the image tokens mixed in by attention drown a fresh LLM's word
    embeddings, so two different words give nearly the same state; a larger std keeps them apart."""
    import dataclasses

    import numpy as np
    import torch

    from llmseg.model.presets import get_preset
    from llmseg.model.vlm import VLM

    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    base = get_preset("shapes").vlm  # the preset that trains its LLM from scratch
    similarities = {}
    for std in (None, 1.0):
        torch.manual_seed(0)
        vlm = VLM.from_config(dataclasses.replace(base, word_embedding_std=std))
        with torch.no_grad():
            states = vlm.encode([image, image], ["the red circle.", "the blue circle."]).token_hidden[:, 1]
        similarities[std] = float(torch.nn.functional.cosine_similarity(states[0], states[1], dim=0))
    assert similarities[1.0] < 0.5 < similarities[None]
