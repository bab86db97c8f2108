"""Region encoder: preprocessing geometry, feature map shapes, mask pooling, options, official positions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model

from llmseg.model import region_encoder as region_encoder_module
from llmseg.model.config import RegionEncoderConfig
from llmseg.model.region_encoder import RegionEncoder, mask_shape_crops, sinusoidal_position_encoding

TINY_DINOV2 = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, patch_size=14)


def tiny_config(**overrides) -> RegionEncoderConfig:
    settings = dict(
        dinov2=None, dinov2_config=dict(TINY_DINOV2, image_size=56), image_size=56, out_dim=8, feature_size=16
    )
    settings.update(overrides)
    return RegionEncoderConfig(**settings)


@pytest.fixture
def encoder() -> RegionEncoder:
    torch.manual_seed(0)
    return RegionEncoder.from_config(tiny_config())


def test_preprocess_resizes_long_side_normalises_and_pads(encoder):
    image = np.full((30, 20, 3), (200, 100, 50), np.uint8)
    pixels = encoder.preprocess(image)
    assert pixels.shape == (3, 56, 56)
    expected = (torch.tensor([200.0, 100.0, 50.0]) - torch.tensor(encoder.config.pixel_mean)) / torch.tensor(
        encoder.config.pixel_std
    )
    width = round(20 * 56 / 30)  # 37: the short side scales with the long one
    torch.testing.assert_close(pixels[:, :, :width], expected.view(3, 1, 1).expand(3, 56, width))
    assert torch.all(pixels[:, :, width:] == 0)


def test_prepare_masks_pads_square_the_same_way(encoder):
    masks = np.zeros((2, 30, 20), bool)
    masks[0] = True  # the whole image: the left 20/30 of the padded square
    prepared = encoder.prepare_masks(masks)
    assert prepared.shape == (2, 16, 16) and prepared.dtype == torch.float32
    assert torch.all(prepared[0, :, :10] > 0.99) and torch.all(prepared[0, :, 11:] < 0.01)
    assert torch.all(prepared[1] == 0)
    assert encoder.prepare_masks(np.zeros((0, 30, 20), bool)).shape == (0, 16, 16)
    with pytest.raises(ValueError, match="K x H x W"):
        encoder.prepare_masks(np.zeros((30, 20), bool))


def test_prepare_masks_in_chunks_gives_the_same_masks(encoder, monkeypatch):
    masks = np.random.default_rng(0).random((5, 30, 20)) > 0.5
    whole = encoder.prepare_masks(masks)
    monkeypatch.setattr(region_encoder_module, "_MASK_CHUNK_PIXELS", 2 * 30 * 30)  # two masks at a time
    torch.testing.assert_close(encoder.prepare_masks(masks), whole)


def test_feature_map_and_forward_shapes(encoder):
    images = torch.stack([encoder.preprocess(np.zeros((40, 56, 3), np.uint8))] * 2)
    features = encoder.feature_map(images)
    assert features.shape == (2, 8, 16, 16)
    masks = torch.rand(2, 5, 16, 16)
    assert encoder(images, masks).shape == (2, 5, 8)
    with pytest.raises(ValueError, match="pixel values of shape"):
        encoder.feature_map(torch.zeros(1, 3, 28, 28))
    with pytest.raises(ValueError, match="do not match the feature map"):
        encoder.pool(features, torch.rand(2, 5, 8, 8))


def test_pool_is_the_mask_weighted_mean(encoder):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 8, 16, 16, generator=generator)
    masks = torch.rand(2, 3, 16, 16, generator=generator)
    masks[1, 2] = 0  # an empty mask pools to zeros
    pooled = encoder.pool(features, masks).numpy()
    f, m = features.double().numpy(), masks.double().numpy()
    for b in range(2):
        for k in range(3):
            weight = m[b, k].sum()
            expected = (f[b] * m[b, k]).sum(axis=(1, 2)) / weight if weight else np.zeros(8)
            np.testing.assert_allclose(pooled[b, k], expected, rtol=1e-4, atol=1e-5)


def test_positional_encoding_is_added_before_pooling():
    torch.manual_seed(0)
    plain = RegionEncoder.from_config(tiny_config())
    located = RegionEncoder(tiny_config(positional_encoding=True), backbone=plain.backbone)
    located.conv.load_state_dict(plain.conv.state_dict())
    images = plain.preprocess(np.zeros((56, 56, 3), np.uint8))[None]
    difference = located.feature_map(images) - plain.feature_map(images)
    torch.testing.assert_close(difference[0], sinusoidal_position_encoding(8, 16))
    # two same-looking regions at different places now pool to different vectors
    left, right = torch.zeros(2, 16, 16), torch.zeros(2, 16, 16)
    left[0, 4:8, 1:5], right[1, 4:8, 10:14] = 1, 1
    pooled = located.pool(torch.ones(1, 8, 16, 16) + located.position_encoding, (left + right)[None])
    assert not torch.allclose(pooled[0, 0], pooled[0, 1])


def test_sinusoidal_encoding_gives_each_position_its_own_code():
    encoding = sinusoidal_position_encoding(16, 12)
    assert encoding.shape == (16, 12, 12) and encoding.abs().max() <= 1
    codes = encoding.flatten(1).T
    assert torch.cdist(codes, codes).add(torch.eye(144) * 10).min() > 1e-3
    with pytest.raises(ValueError, match="divisible by 4"):
        RegionEncoder.from_config(tiny_config(out_dim=6, positional_encoding=True))


def test_shape_crops_follow_the_mask_not_its_position():
    masks = torch.zeros(3, 16, 16)
    masks[0, 2:6, 3:9] = 1  # a rectangle ...
    masks[1, 9:13, 8:14] = 1  # ... the same rectangle elsewhere
    crops = mask_shape_crops(masks, 4)
    # the crop fills the box (edge bins blend with the zeros just outside it)
    assert torch.all(crops[0] >= 0.75) and torch.all(crops[0, 1:3, 1:3] == 1)
    torch.testing.assert_close(crops[0], crops[1])
    assert torch.all(crops[2] == 0)
    assert mask_shape_crops(torch.zeros(0, 16, 16), 4).shape == (0, 4, 4)


def test_shape_embedding_tells_outlines_apart():
    torch.manual_seed(0)
    encoder = RegionEncoder.from_config(tiny_config(shape_embedding_size=8))
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    square = ((yy - 8).abs() <= 4) & ((xx - 8).abs() <= 4)
    disk = (yy - 8) ** 2 + (xx - 8) ** 2 <= 30
    masks = torch.stack([square, disk]).float()[None]
    pooled = encoder.pool(torch.ones(1, 8, 16, 16), masks)  # a flat map: plain pooling cannot tell them apart
    assert not torch.allclose(pooled[0, 0], pooled[0, 1])
    assert sum(p.numel() for p in encoder.shape_embedding.parameters()) == 64 * 8 + 8 + 8 * 8 + 8


def test_official_position_grid_matches_the_release_interpolation():
    torch.manual_seed(0)
    backbone = Dinov2Model(Dinov2Config(**TINY_DINOV2, image_size=518))
    original = backbone.embeddings.position_embeddings.detach().clone()
    encoder = RegionEncoder(tiny_config(image_size=896, position_interpolation="official"), backbone=backbone)

    # The release's computation, written out: 37 x 37 grid, scale factor (64 + 0.1) / 37, bicubic, fp32.
    grid = original[:, 1:].reshape(1, 37, 37, 16).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(grid, scale_factor=(64.1 / 37, 64.1 / 37), mode="bicubic")
    expected = torch.cat([original[:, :1], resized.permute(0, 2, 3, 1).reshape(1, 64 * 64, 16)], dim=1)
    stored = encoder.backbone.embeddings.position_embeddings
    torch.testing.assert_close(stored, expected, rtol=0, atol=0)
    by_size = F.interpolate(grid, size=(64, 64), mode="bicubic").permute(0, 2, 3, 1).reshape(1, -1, 16)
    assert not torch.allclose(stored[:, 1:], by_size)  # the option matters
    assert encoder.backbone.config.image_size == 896
    # an 896 input uses the stored table as is
    dummy = torch.zeros(1, 64 * 64 + 1, 16)
    assert encoder.backbone.embeddings.interpolate_pos_encoding(dummy, 896, 896) is stored
    features = encoder.feature_map(torch.zeros(1, 3, 896, 896))
    assert features.shape == (1, 8, 16, 16) and torch.isfinite(features).all()


def test_backbone_is_frozen_and_stays_in_eval(encoder):
    assert not any(p.requires_grad for p in encoder.backbone.parameters())
    assert all(p.requires_grad for p in encoder.conv.parameters())
    encoder.train()
    assert encoder.training and not encoder.backbone.training
    trainable = RegionEncoder.from_config(tiny_config(trainable_backbone=True)).train()
    assert trainable.backbone.training and all(p.requires_grad for p in trainable.backbone.parameters())


def test_from_config_loads_a_saved_backbone_and_explains_missing_ones(tmp_path):
    torch.manual_seed(0)
    saved = Dinov2Model(Dinov2Config(**TINY_DINOV2, image_size=56))
    saved.save_pretrained(tmp_path / "dinov2")
    loaded = RegionEncoder.from_config(tiny_config(dinov2=str(tmp_path / "dinov2"), dinov2_config=None))
    for name, tensor in saved.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[name], tensor), name
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="dinov2-large"):
        RegionEncoder.from_config(tiny_config(dinov2=str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="dinov2_config"):
        RegionEncoder.from_config(dataclasses.replace(tiny_config(), dinov2_config=None))
    with pytest.raises(ValueError, match="multiple of patch size"):
        RegionEncoder.from_config(tiny_config(image_size=50))


def test_preprocess_rejects_non_rgb(encoder):
    with pytest.raises(ValueError, match="HWC uint8 RGB"):
        encoder.preprocess(np.zeros((8, 8, 4), np.uint8))


def test_color_features_add_a_linear_map_of_the_image_colours():
    torch.manual_seed(0)
    plain = RegionEncoder.from_config(tiny_config())
    colored = RegionEncoder(tiny_config(color_features=True), backbone=plain.backbone)
    colored.conv.load_state_dict(plain.conv.state_dict())
    image = np.zeros((56, 56, 3), np.uint8)
    image[:, 28:] = (200, 30, 30)
    pixels = plain.preprocess(image)[None]
    difference = colored.feature_map(pixels) - plain.feature_map(pixels)
    expected = colored.color_projection(F.adaptive_avg_pool2d(pixels, 16))
    torch.testing.assert_close(difference, expected)
    # the left (black) and right (red) halves pool to different colour terms
    halves = torch.zeros(1, 2, 16, 16)
    halves[0, 0, :, :8], halves[0, 1, :, 8:] = 1, 1
    pooled = colored.pool(difference, halves)
    assert not torch.allclose(pooled[0, 0], pooled[0, 1])


def test_mask_geometry_gives_box_and_area_fractions():
    masks = torch.zeros(2, 16, 16)
    masks[0, 2:6, 4:12] = 1  # rows 2..5, columns 4..11
    geometry = region_encoder_module.mask_geometry(masks)
    torch.testing.assert_close(geometry[0], torch.tensor([4 / 16, 2 / 16, 12 / 16, 6 / 16, (32 / 256) ** 0.5]))
    torch.testing.assert_close(geometry[1], torch.zeros(5))  # an empty mask


def test_box_embedding_tells_sizes_apart():
    torch.manual_seed(0)
    encoder = RegionEncoder.from_config(tiny_config(box_embedding=True))
    small, large = torch.zeros(16, 16), torch.zeros(16, 16)
    small[4:6, 4:6], large[2:14, 2:14] = 1, 1
    flat = torch.ones(1, 8, 16, 16)  # every position has the same feature: only the box term differs
    pooled = encoder.pool(flat, torch.stack([small, large])[None])
    assert not torch.allclose(pooled[0, 0], pooled[0, 1])


def test_box_embedding_reads_given_geometry_as_if_measured_itself():
    torch.manual_seed(0)
    encoder = RegionEncoder.from_config(tiny_config(box_embedding=True))
    masks = (torch.rand(2, 3, 16, 16) > 0.6).float()
    feature_map = torch.randn(2, 8, 16, 16)
    measured = region_encoder_module.proposal_geometry(masks)
    assert measured.shape == (2, 3, 5)
    torch.testing.assert_close(encoder.pool(feature_map, masks, measured), encoder.pool(feature_map, masks))
    moved = measured.clone()
    moved[..., :4] = 0.0
    assert not torch.allclose(encoder.pool(feature_map, masks, moved), encoder.pool(feature_map, masks))
