"""Losses and training targets against values computed by hand or with plain NumPy loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmseg.model.losses import alignment_loss, existence_loss, iop_loss, overlap_targets


def test_overlap_targets_match_direct_counts():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 9, 11)) > 0.6
    masks[5] = False  # an empty proposal
    target = rng.random((9, 11)) > 0.5
    ignore = rng.random((9, 11)) > 0.8
    for region in (None, ignore):
        iou, iop = overlap_targets(masks, target, region)
        assert iou.dtype == np.float32 and iop.dtype == np.float32
        keep = np.ones_like(target) if region is None else ~region
        for k in range(6):
            inter = np.sum(masks[k] & target & keep)
            union = np.sum((masks[k] | target) & keep)
            area = np.sum(masks[k] & keep)
            assert iou[k] == pytest.approx(inter / union if union else 0.0)
            assert iop[k] == pytest.approx(inter / area if area else 0.0)
    assert overlap_targets(masks[:5], target)[0].max() < 1
    iou, iop = overlap_targets(np.stack([target, target & False]), target)
    np.testing.assert_array_equal(iou, [1, 0])
    np.testing.assert_array_equal(iop, [1, 0])


def test_overlap_targets_handle_no_proposals_and_bad_shapes():
    iou, iop = overlap_targets(np.zeros((0, 4, 4), bool), np.ones((4, 4), bool))
    assert iou.shape == (0,) and iop.shape == (0,)
    with pytest.raises(ValueError, match="share H x W"):
        overlap_targets(np.zeros((2, 4, 4), bool), np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="ignore region"):
        overlap_targets(np.zeros((2, 4, 4), bool), np.ones((4, 4), bool), np.zeros((3, 3), bool))


def kl_by_hand(iou: list[float], sim: list[float], tau: float) -> float:
    def softmax(values):
        exps = [math.exp(v / tau) for v in values]
        return [e / sum(exps) for e in exps]

    p, q = softmax(iou), softmax(sim)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_alignment_loss_is_the_kl_of_the_valid_proposals():
    similarity = torch.tensor([[0.1, 0.5, -0.2], [0.3, -0.4, 0.9], [0.0, 0.0, 0.0]], requires_grad=True)
    iou = torch.tensor([[0.0, 1.0, 0.5], [0.8, 0.1, 0.7], [0.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True], [True, True, False], [False, False, False]])
    loss = alignment_loss(similarity, iou, valid, temperature=0.5)
    expected = (kl_by_hand([0.0, 1.0, 0.5], [0.1, 0.5, -0.2], 0.5) + kl_by_hand([0.8, 0.1], [0.3, -0.4], 0.5)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(similarity.grad).all()
    assert torch.all(similarity.grad[1, 2] == 0) and torch.all(similarity.grad[2] == 0)


def test_alignment_loss_vanishes_when_similarity_ranks_like_iou():
    iou = torch.tensor([[0.0, 1.0, 0.5]])
    assert alignment_loss(iou.clone(), iou, torch.ones(1, 3, dtype=torch.bool), 0.05).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_iop_loss_weights_good_proposals_more():
    pred = torch.tensor([[0.2, 0.9, 0.5], [0.4, 0.0, 0.0]])
    gold = torch.tensor([[0.0, 1.0, 0.3], [1.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, False], [True, False, False]])
    first = (math.exp(-1) * 0.2**2 + math.exp(0) * 0.1**2) / 2 * 50
    second = math.exp(0) * 0.6**2 * 50
    assert iop_loss(pred, gold, valid).item() == pytest.approx((first + second) / 2, rel=1e-5)


def test_losses_without_any_valid_proposal_are_zero_and_differentiable():
    similarity = torch.zeros(2, 3, requires_grad=True)
    none = torch.zeros(2, 3, dtype=torch.bool)
    for loss in (
        alignment_loss(similarity, torch.zeros(2, 3), none, 0.05),
        iop_loss(similarity, torch.ones(2, 3), none),
    ):
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(similarity.grad).all()
    empty = torch.zeros(2, 0)
    assert alignment_loss(empty, empty, empty.bool(), 0.05).item() == 0.0


def test_existence_loss_is_binary_cross_entropy():
    logits = torch.tensor([2.0, -1.0, 0.5])
    labels = torch.tensor([True, False, False])

    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    expected = -(math.log(sigmoid(2.0)) + math.log(1 - sigmoid(-1.0)) + math.log(1 - sigmoid(0.5))) / 3
    assert existence_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
