"""Proposal generators: SAM loading and plumbing with a tiny random SAM, colour regions on drawn scenes."""

from __future__ import annotations

import io
from functools import partial

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from llmseg.model import sam as sam_module
from llmseg.model.config import ProposalConfig
from llmseg.model.proposals import (
    ColorProposalGenerator,
    Proposals,
    SamProposalGenerator,
    build_proposal_generator,
    rank_records,
    resize_mask,
    shrink_long_side,
)
from llmseg.model.sam import load_sam

TINY_SAM_SIDE = 64
PALETTE = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (235, 205, 40)}


def build_tiny_sam() -> Sam:
    """A randomly initialised SAM small enough for a unit test (64 px input, width 32)."""
    embed = 32
    grid = TINY_SAM_SIDE // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=TINY_SAM_SIDE,
            patch_size=16,
            embed_dim=32,
            depth=1,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=embed,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=embed,
            image_embedding_size=(grid, grid),
            input_image_size=(TINY_SAM_SIDE, TINY_SAM_SIDE),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=embed, mlp_dim=64, num_heads=2),
            transformer_dim=embed,
            iou_head_depth=1,
            iou_head_hidden_dim=16,
        ),
    ).eval()


@pytest.fixture
def tiny_sam_checkpoint(tmp_path, monkeypatch):
    """A tiny SAM saved as an original-style state dict, with its builder registered as "tiny"."""
    monkeypatch.setitem(sam_module.SAM_BUILDERS, "tiny", build_tiny_sam)
    torch.manual_seed(0)
    path = tmp_path / "sam_tiny.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    return path


def permissive_config(**overrides) -> ProposalConfig:
    """Thresholds off, so that a random SAM still returns masks (only the plumbing is under test)."""
    settings = dict(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0, max_side=TINY_SAM_SIDE
    )
    settings.update(overrides)
    return ProposalConfig(**settings)


def test_load_sam_round_trips_weights(tiny_sam_checkpoint):
    sam = load_sam(tiny_sam_checkpoint, "tiny")
    saved = torch.load(tiny_sam_checkpoint, map_location="cpu", weights_only=True)
    assert not sam.training
    for name, tensor in sam.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_load_sam_rejects_bad_inputs(tmp_path, tiny_sam_checkpoint):
    with pytest.raises(ValueError, match="sam_vit_h_4b8939.pth"):
        load_sam(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown SAM model type"):
        load_sam(tiny_sam_checkpoint, "vit_huge")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable SAM checkpoint"):
        load_sam(garbage, "tiny")
    wrong = tmp_path / "wrong.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="does not match SAM model type"):
        load_sam(wrong, "tiny")


def test_sam_generator_shrinks_ranks_limits_and_maps_back(tiny_sam_checkpoint):
    generator = SamProposalGenerator(load_sam(tiny_sam_checkpoint, "tiny"), permissive_config(max_proposals=3))
    seen = {}
    generate = generator.mask_generator.generate

    def spy(image):
        seen["shape"] = image.shape
        seen["records"] = generate(image)
        return seen["records"]

    generator.mask_generator.generate = spy
    image = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    result = generator(image)

    assert seen["shape"] == (43, 64, 3)  # long side 150 -> 64
    assert len(seen["records"]) > 3
    best = sorted(seen["records"], key=lambda r: r["predicted_iou"], reverse=True)[:3]
    assert len(result) == 3
    assert result.masks.shape == (3, 100, 150) and result.masks.dtype == bool
    np.testing.assert_allclose(result.scores, [r["predicted_iou"] for r in best], rtol=1e-6)
    assert np.all(np.diff(result.scores) <= 0)
    for mask, record in zip(result.masks, best, strict=True):
        np.testing.assert_array_equal(mask, resize_mask(record["segmentation"], 100, 150))


def test_sam_generator_area_ranking(tiny_sam_checkpoint):
    generator = SamProposalGenerator(
        load_sam(tiny_sam_checkpoint, "tiny"), permissive_config(max_proposals=4, rank_by="area")
    )
    image = np.random.default_rng(1).integers(0, 256, (48, 32, 3), dtype=np.uint8)  # no shrinking needed
    result = generator(image)
    assert result.masks.shape[1:] == (48, 32)
    assert np.all(np.diff(result.masks.sum(axis=(1, 2))) <= 0)


def test_sam_generator_without_surviving_masks_returns_empty(tiny_sam_checkpoint):
    strict = permissive_config(pred_iou_thresh=1.5)  # no predicted IoU exceeds 1.5
    result = SamProposalGenerator(load_sam(tiny_sam_checkpoint, "tiny"), strict)(np.zeros((20, 30, 3), np.uint8))
    assert len(result) == 0 and result.masks.shape == (0, 20, 30) and result.scores.dtype == np.float32


def test_build_proposal_generator_uses_the_real_loading_path(tiny_sam_checkpoint, monkeypatch):
    monkeypatch.setitem(sam_module.SAM_BUILDERS, "vit_h", build_tiny_sam)
    generator = build_proposal_generator(permissive_config(sam_checkpoint=str(tiny_sam_checkpoint)))
    assert isinstance(generator, SamProposalGenerator)
    with pytest.raises(ValueError, match="sam_checkpoint is not set"):
        build_proposal_generator(ProposalConfig())


def test_rank_records_orders_and_limits():
    records = [{"predicted_iou": 0.9, "area": 5}, {"predicted_iou": 0.95, "area": 1}, {"predicted_iou": 0.7, "area": 9}]
    assert [r["area"] for r in rank_records(records, "score", 2)] == [1, 5]
    assert [r["area"] for r in rank_records(records, "area", 2)] == [9, 5]


def test_shrink_long_side_never_enlarges():
    image = np.zeros((30, 20, 3), np.uint8)
    assert shrink_long_side(image, 64) is image
    assert shrink_long_side(np.zeros((2000, 1000, 3), np.uint8), 1024).shape == (1024, 512, 3)


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3)), "x"])
def test_generators_reject_non_rgb_input(bad):
    with pytest.raises(ValueError, match="HWC uint8 RGB"):
        ColorProposalGenerator(PALETTE)(bad)


def test_proposals_validate_their_arrays():
    with pytest.raises(ValueError, match="bool"):
        Proposals(np.zeros((1, 4, 4), np.uint8), np.ones(1, np.float32))
    with pytest.raises(ValueError, match="one score per proposal"):
        Proposals(np.zeros((2, 4, 4), bool), np.ones(1, np.float32))


# --- the colour generator on scenes drawn here ---------------------------------------------------


def draw_scene(seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A textured grey background with overlapping flat shapes; returns the image and visible masks."""
    rng = np.random.default_rng(seed)
    size = 128
    grey = rng.integers(90, 170)
    background = np.clip(grey + rng.normal(0, 12, (size, size, 1)) + rng.normal(0, 4, (size, size, 3)), 0, 255)
    canvas = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    labels = np.zeros((size, size), dtype=np.int32)  # 0 = background, i = object i (drawing order)
    names = list(PALETTE)
    for index in range(1, 5):
        color = PALETTE[names[(index - 1) % len(names)]]
        x0, y0 = rng.integers(0, size - 50, 2)
        w, h = rng.integers(25, 50, 2)
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        kind = index % 3
        layer = Image.new("L", (size, size), 0)
        layer_draw = ImageDraw.Draw(layer)
        shape = [draw.rectangle, draw.ellipse, draw.polygon][kind]
        layer_shape = [layer_draw.rectangle, layer_draw.ellipse, layer_draw.polygon][kind]
        points = box if kind < 2 else [(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])]
        shape(points, fill=color)
        layer_shape(points, fill=1)
        labels[np.asarray(layer, dtype=bool)] = index
    masks = [labels == index for index in range(1, 5) if (labels == index).sum() > 0]
    return np.asarray(canvas), masks


def best_iou(target: np.ndarray, masks: np.ndarray) -> float:
    intersection = (masks & target).sum(axis=(1, 2))
    union = (masks | target).sum(axis=(1, 2))
    return float((intersection / union).max())


@pytest.mark.parametrize("seed", range(6))
def test_color_generator_recovers_drawn_shapes(seed):
    image, objects = draw_scene(seed)
    result = ColorProposalGenerator(PALETTE, min_region_area=4)(image)
    assert result.masks.shape[1:] == image.shape[:2]
    assert np.all(result.scores == 1.0)
    for target in objects:
        # an occluded object may be cut in two; the same-colour union distractor covers that case
        assert best_iou(target, result.masks) > 0.99


def antialiased_disk_scene() -> tuple[np.ndarray, np.ndarray]:
    """A jittered red disk composited by its exact coverage over grey stripes; its mask is coverage >= 0.5."""
    size, supersample = 64, 8
    fine = (np.arange(size * supersample) + 0.5) / supersample
    inside = (fine[:, None] - 30.7) ** 2 + (fine[None, :] - 32.4) ** 2 <= 12.3**2
    coverage = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    stripes = np.where((np.arange(size) // 4) % 2 == 0, 100.0, 160.0)[None, :, None].repeat(size, axis=0)
    color = np.array(PALETTE["red"]) * 0.93
    image = stripes * (1 - coverage[..., None]) + color * coverage[..., None]
    return np.rint(image).astype(np.uint8), coverage >= 0.5


def test_color_generator_ends_regions_where_the_object_covers_half():
    image, expected = antialiased_disk_scene()
    generator = ColorProposalGenerator(PALETTE)
    recovered = generator(image).masks
    assert best_iou(expected, recovered) > 0.99
    core_only = generator.quantize(image) == list(PALETTE).index("red")
    assert best_iou(expected, core_only[None]) < best_iou(expected, recovered)


def test_color_generator_on_generated_shapes_scenes():
    """The real synthetic world: every object's visible mask comes back nearly exactly."""
    shapes = pytest.importorskip("llmseg.data.shapes")
    generator = build_proposal_generator(ProposalConfig(kind="color"))
    ious = []
    for index in range(8):
        generated = shapes.generate_sample(seed=0, split="validation", index=index)
        image = np.asarray(Image.open(io.BytesIO(generated.sample.image)).convert("RGB"))
        result = generator(image)
        ious += [best_iou(target, result.masks) for target in generated.scene.masks]
    assert len(ious) >= 16 and np.mean(ious) >= 0.95


def test_color_generator_adds_distractors_and_caps():
    image = np.full((64, 64, 3), 128, np.uint8)
    image[10:30, 10:30] = PALETTE["red"]
    image[10:30, 30:50] = PALETTE["blue"]  # touches the red square
    image[40:60, 5:12] = PALETTE["red"]  # a second red region
    generator = ColorProposalGenerator(PALETTE, min_region_area=4)
    masks = generator(image).masks
    red_square = np.zeros((64, 64), bool)
    red_square[10:30, 10:30] = True
    blue_square = np.zeros((64, 64), bool)
    blue_square[10:30, 30:50] = True
    red_bar = np.zeros((64, 64), bool)
    red_bar[40:60, 5:12] = True
    expected = [red_square, blue_square, red_bar, red_square | blue_square, red_square | red_bar]
    for mask in expected:
        assert any(np.array_equal(mask, candidate) for candidate in masks)
    halves = [m for m in masks if m.sum() == 200 and (m & red_square).sum() == 200]
    assert halves, "half of the red square is a distractor"
    assert np.all(np.diff(masks.sum(axis=(1, 2))) <= 0)
    capped = ColorProposalGenerator(PALETTE, max_proposals=2, min_region_area=4)(image).masks
    assert len(capped) == 2
    assert all(any(np.array_equal(c, m) for m in (red_square, blue_square)) for c in capped)


def test_color_generator_on_background_only_gives_no_proposals():
    result = ColorProposalGenerator(PALETTE)(np.full((1, 1, 3), 128, np.uint8))
    assert len(result) == 0 and result.masks.shape == (0, 1, 1)


def test_resize_mask_keeps_geometry():
    mask = np.zeros((10, 20), bool)
    mask[2:8, 5:15] = True
    big = resize_mask(mask, 40, 80)
    expected = cv2.resize(mask.astype(np.uint8), (80, 40), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert (big ^ expected).mean() < 0.02
