"""Segmenter: per-image cache (counted calls), input conversion and validation, output at the input's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from llmseg.model.llmseg import LLMSeg
from llmseg.pipeline import MAX_SIDE, MIN_SIDE, Segmenter, to_rgb_array

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> LLMSeg:
    torch.manual_seed(0)
    return LLMSeg.from_pretrained("tiny")


def scene(shift: int = 0) -> np.ndarray:
    image = np.full((60, 80, 3), 128, np.uint8)
    image[5 + shift : 25 + shift, 5:30] = (220, 30, 35)
    image[35:55, 40:75] = (35, 80, 225)
    return image


class CallCounter:
    """Wraps a callable and counts its calls."""

    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


@pytest.fixture
def counted(model, monkeypatch) -> dict[str, CallCounter]:
    counters = {
        "proposals": CallCounter(model.proposal_generator),
        "dinov2": CallCounter(model.region_encoder.feature_map),
        "vision_tower": CallCounter(model.vlm.image_features),
        "language_model": CallCounter(model.vlm.encode),
    }
    monkeypatch.setattr(model, "proposal_generator", counters["proposals"])
    monkeypatch.setattr(model.region_encoder, "feature_map", counters["dinov2"])
    monkeypatch.setattr(model.vlm, "image_features", counters["vision_tower"])
    monkeypatch.setattr(model.vlm, "encode", counters["language_model"])
    return counters


def calls(counters: dict[str, CallCounter]) -> dict[str, int]:
    return {name: counter.calls for name, counter in counters.items()}


def test_a_second_question_on_the_same_image_skips_the_image_stages(model, counted):
    segmenter = Segmenter(model)
    first = segmenter.segment(scene(), "the red square")
    assert calls(counted) == {"proposals": 1, "dinov2": 1, "vision_tower": 1, "language_model": 1}
    assert not first.cached and first.timings["proposals"] > 0

    # Same content as a fresh PIL image: still a cache hit (keyed by content, not identity).
    second = segmenter.segment(Image.fromarray(scene()), "Which shape is blue?")
    assert calls(counted) == {"proposals": 1, "dinov2": 1, "vision_tower": 1, "language_model": 2}
    assert second.cached and second.timings["proposals"] == second.timings["region_features"] == 0.0
    again = segmenter.segment(scene(), "the red square")
    np.testing.assert_array_equal(again.iop, first.iop)
    np.testing.assert_array_equal(again.similarity, first.similarity)

    segmenter.segment(scene(shift=3), "the red square")
    assert counted["proposals"].calls == 2 and counted["dinov2"].calls == 2


def test_the_cache_is_a_bounded_lru(model, counted):
    segmenter = Segmenter(model, cache_size=1)
    for shift in (0, 3, 0):
        segmenter.segment(scene(shift), "the red square")
    assert counted["proposals"].calls == 3  # the first image was evicted by the second
    uncached = Segmenter(model, cache_size=0)
    uncached.segment(scene(), "the red square")
    uncached.segment(scene(), "the red square")
    assert counted["proposals"].calls == 5
    with pytest.raises(ValueError, match="cache_size"):
        Segmenter(model, cache_size=-1)


def test_result_fields_and_timings(model):
    result = Segmenter(model).segment(scene(), "the red square", answer=True)
    k = len(result.proposals)
    assert k > 0 and result.iop.shape == result.similarity.shape == result.selected.shape == (k,)
    assert result.mask.shape == (60, 80) and result.mask.dtype == bool
    union = result.proposals.masks[result.selected].any(axis=0) if result.selected.any() else np.zeros((60, 80), bool)
    np.testing.assert_array_equal(result.mask, union)
    assert isinstance(result.answer, str) and result.existence is None
    stages = {"prepare", "proposals", "region_features", "image_tokens", "vlm", "selection", "answer", "total"}
    assert set(result.timings) == stages
    assert result.timings["total"] >= sum(v for name, v in result.timings.items() if name != "total") * 0.99


def test_an_image_without_proposals_gives_an_empty_mask(model):
    result = Segmenter(model).segment(np.full((40, 40, 3), 128, np.uint8), "the red square")
    assert len(result.proposals) == 0 and result.selected.shape == (0,)
    assert result.mask.shape == (40, 40) and not result.mask.any()


def test_image_modes_and_dtypes_convert_to_the_same_rgb():
    rgb = scene()
    gray = rgb.mean(axis=2).astype(np.uint8)
    assert np.array_equal(to_rgb_array(Image.fromarray(rgb).convert("RGBA")), rgb)
    assert np.array_equal(to_rgb_array(np.dstack([rgb, np.full(gray.shape, 7, np.uint8)])), rgb)
    assert np.array_equal(to_rgb_array(rgb.astype(np.uint16) * 257), rgb)
    assert np.array_equal(to_rgb_array(rgb.astype(np.float32) / 255.0), rgb)
    assert np.array_equal(to_rgb_array(rgb.astype(np.int64)), rgb)
    expected_gray = np.repeat(gray[..., None], 3, axis=2)
    assert np.array_equal(to_rgb_array(Image.fromarray(gray, mode="L")), expected_gray)
    assert np.array_equal(to_rgb_array(gray[..., None]), expected_gray)
    assert np.array_equal(to_rgb_array(Image.fromarray(gray.astype(np.uint16) * 257)), expected_gray)  # "I;16"
    palette = Image.fromarray(rgb).convert("P")
    palette.info["transparency"] = 0
    for other_mode in (palette, Image.fromarray(rgb).convert("1"), Image.fromarray(rgb).convert("CMYK")):
        converted = to_rgb_array(other_mode)
        assert converted.shape == rgb.shape and converted.dtype == np.uint8
    binary = np.zeros((20, 20), bool)
    binary[5:10] = True
    assert to_rgb_array(binary)[7, 0].tolist() == [255, 255, 255] and to_rgb_array(binary)[0, 0].tolist() == [0, 0, 0]


def test_rgba_and_grayscale_inputs_segment_like_their_rgb(model):
    segmenter = Segmenter(model)
    expected = segmenter.segment(scene(), "the red square")
    for variant in (Image.fromarray(scene()).convert("RGBA"), scene().astype(np.uint16) * 257):
        result = segmenter.segment(variant, "the red square")
        assert result.cached
        np.testing.assert_array_equal(result.mask, expected.mask)
    gray = segmenter.segment(Image.fromarray(scene()).convert("L"), "the red square")
    assert gray.mask.shape == (60, 80)


def test_a_huge_image_is_shrunk_and_its_mask_scaled_back(model):
    big = np.full((8000, 8000, 3), 128, np.uint8)
    big[1000:4000, 1000:5000] = (220, 30, 35)
    result = Segmenter(model).segment(big, "the red square")
    assert result.mask.shape == (8000, 8000)
    assert max(result.proposals.masks.shape[1:]) == model.config.proposals.max_side
    union = result.proposals.masks[result.selected].any(axis=0) if result.selected.any() else None
    if union is not None:  # same covered fraction at both sizes, up to edge rounding
        assert abs(result.mask.mean() - union.mean()) < 0.01


@pytest.mark.parametrize(
    "image, message",
    [
        ("picture.png", "PIL image or a NumPy"),
        ([[0, 1], [2, 3]], "PIL image or a NumPy"),
        (None, "PIL image or a NumPy"),
        (np.zeros(100, np.uint8), "H x W"),
        (np.zeros((2, 20, 20, 3), np.uint8), "H x W"),
        (np.zeros((20, 20, 2), np.uint8), "H x W"),
        (np.zeros((1, 1, 3), np.uint8), "between"),
        (Image.new("RGB", (1, 1)), "between"),
        (np.zeros((MIN_SIDE - 1, 100, 3), np.uint8), "between"),
        (np.zeros((MAX_SIDE + 1, 10, 3), np.uint8), "between"),
        (np.full((20, 20, 3), np.nan, np.float32), "NaN"),
        (np.full((20, 20, 3), -1, np.int32), "integer image values"),
        (np.full((20, 20, 3), 300.0), "float image values"),
        (np.zeros((20, 20, 3), np.complex64), "dtype"),
    ],
)
def test_bad_images_are_clear_errors(model, image, message):
    with pytest.raises(ValueError, match=message):
        Segmenter(model).segment(image, "the red square")


@pytest.mark.parametrize("query", ["", "  \n", None, 42, "word " * 500])
def test_bad_queries_are_clear_errors(model, query):
    with pytest.raises(ValueError, match="query"):
        Segmenter(model).segment(scene(), query)
