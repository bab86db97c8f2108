"""The assembled model on the tiny preset: shapes through every stage, what trains, overfitting one sample."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from llmseg.model.config import SelectorConfig
from llmseg.model.llmseg import LLMSeg
from llmseg.model.presets import get_preset
from llmseg.model.selection import select
from llmseg.pipeline import Segmenter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


RED, BLUE, GREEN = (220, 30, 35), (35, 80, 225), (35, 165, 60)  # colours of the shapes palette


def scene() -> tuple[np.ndarray, np.ndarray]:
    """Three separate palette-coloured boxes on grey; returns the image and the red box's mask."""
    image = np.full((72, 96, 3), 128, np.uint8)
    target = np.zeros(image.shape[:2], bool)
    target[6:30, 6:30] = True
    image[target] = RED
    image[40:66, 20:44] = BLUE
    image[10:50, 60:88] = GREEN
    return image, target


def tiny_model(seed: int = 0, **selector_overrides) -> LLMSeg:
    torch.manual_seed(seed)
    config = get_preset("tiny")
    if selector_overrides:
        config = dataclasses.replace(config, selector=dataclasses.replace(config.selector, **selector_overrides))
    return LLMSeg.from_config(config)


def test_tensor_shapes_through_every_stage():
    model = tiny_model().eval()
    config = model.config
    image, _ = scene()
    proposals = model.proposal_generator(image)
    k = len(proposals)
    assert k >= 3 and proposals.masks.shape == (k, *image.shape[:2])
    side = config.region_encoder.feature_size
    masks = model.region_encoder.prepare_masks(proposals.masks)
    assert masks.shape == (k, side, side)
    pixels = model.region_encoder.preprocess(image)[None]
    assert pixels.shape == (1, 3, config.region_encoder.image_size, config.region_encoder.image_size)
    with torch.no_grad():
        feature_map = model.region_encoder.feature_map(pixels)
        assert feature_map.shape == (1, config.region_encoder.out_dim, side, side)
        features = model.region_encoder.pool(feature_map, masks[None])
        assert features.shape == (1, k, config.selector.dim)
        vlm_out = model.vlm.encode([image], ["the red square"])
        hidden = model.vlm.hidden_size
        assert vlm_out.seg_hidden.shape == (1, hidden)
        assert vlm_out.token_hidden.shape == (1, 3, hidden) and vlm_out.token_valid.all()
        scores = model.score(features, torch.ones(1, k, dtype=torch.bool), vlm_out)
    assert scores.iop.shape == scores.similarity.shape == (1, k)
    assert ((scores.iop >= 0) & (scores.iop <= 1)).all() and (scores.similarity.abs() <= 1 + 1e-6).all()
    assert select(scores.iop[0].numpy(), scores.similarity[0].numpy(), config.selection).shape == (k,)


def test_prepare_batch_pads_proposals_and_measures_targets():
    model = tiny_model()
    image, target = scene()
    masks = model.proposal_generator(image).masks
    k = len(masks)
    batch = model.prepare_batch(
        [image, image], ["the red square", "the blue square"], [masks, masks[:1]], [target, target]
    )
    side = model.config.region_encoder.feature_size
    assert batch.proposal_masks.shape == (2, k, side, side)
    assert batch.proposal_valid.tolist() == [[True] * k, [True] + [False] * (k - 1)]
    assert not batch.proposal_masks[1, 1:].any()
    for index, mask in enumerate(masks):  # targets measured independently, pixel by pixel
        overlap = (mask & target).sum()
        assert batch.iop_target[0, index] == pytest.approx(overlap / mask.sum())
        assert batch.iou_target[0, index] == pytest.approx(overlap / (mask | target).sum())
    assert batch.has_target.tolist() == [True, True]


def test_one_optimisation_step_changes_only_what_trains():
    model = tiny_model().train()
    image, target = scene()
    batch = model.prepare_batch([image], ["the red square"], [model.proposal_generator(image).masks], [target])
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model(batch).loss.backward()
    optimizer.step()

    changed = {name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])}
    assert changed <= trainable
    frozen_groups = ("vision_tower", "multi_modal_projector", "region_encoder.backbone", "base_layer")
    for name in before:
        if any(group in name for group in frozen_groups):
            assert name not in trainable and name not in changed, name
    # What the release trains does change: the selector, the 1x1 conv, LoRA (B first), the <SEG> rows.
    expected_changes = ("selector.iop_head", "region_encoder.conv", "lora_B", "embed_tokens.token_", "lm_head.token_")
    for expected in expected_changes:
        assert any(expected in name for name in changed), expected


def test_a_few_dozen_steps_fit_one_sample():
    model = tiny_model(seed=1).train()
    image, target = scene()
    masks = model.proposal_generator(image).masks
    batch = model.prepare_batch([image], ["the red square"], [masks], [target])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    history = []
    for _ in range(30):
        output = model(batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        history.append({name: value.item() for name, value in output.losses.items()})
    # The selection losses vanish; CE falls less, since only LoRA and the <SEG> rows train in the tiny LM.
    for name, factor in (("align", 0.05), ("iop", 0.05), ("ce", 0.7)):
        assert history[-1][name] < factor * history[0][name], (name, history[0][name], history[-1][name])

    result = Segmenter(model).segment(image, "the red square")
    assert result.mask.shape == target.shape
    assert np.array_equal(result.mask, target)
    exact = [index for index, mask in enumerate(result.proposals.masks) if np.array_equal(mask, target)]
    assert result.selected[exact].all()


def test_calibrated_options_add_the_existence_loss_and_handle_no_target():
    model = tiny_model(query_tokens="all", existence_head=True).train()
    assert isinstance(model.selector.config, SelectorConfig)
    image, target = scene()
    masks = model.proposal_generator(image).masks
    nothing = np.zeros_like(target)
    batch = model.prepare_batch(
        [image, image], ["the red square", "the purple circle"], [masks, masks], [target, nothing]
    )
    assert batch.has_target.tolist() == [True, False]
    output = model(batch)
    assert set(output.losses) == {"ce", "align", "iop", "existence"}
    assert all(torch.isfinite(value) for value in output.losses.values())
    assert output.existence_logit.shape == (2,)
    output.loss.backward()
    assert model.selector.existence_head[0].weight.grad is not None


def test_proposal_boxes_are_measured_only_for_configs_that_read_them():
    masks = torch.zeros(1, 2, 8, 8)
    masks[0, 0, 1:3, 2:6] = 1
    assert tiny_model().proposal_boxes(masks) is None  # the release's choices read no boxes
    boxes = tiny_model(pairwise_geometry=True).proposal_boxes(masks)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([2 / 8, 1 / 8, 6 / 8, 3 / 8, (8 / 64) ** 0.5]))
    torch.testing.assert_close(boxes[0, 1], torch.zeros(5))
