"""Training targets and losses of the selection module, as the release computes them.

Per sample: the alignment loss is KL(softmax(IoU/τ) || softmax(cos/τ)) summed over the valid
proposals; the IoP loss is the squared error weighted by exp(IoP_gt - 1), averaged over the valid
proposals and scaled by 50 ("as if every sample had 50 proposals", the release's constant).
Both are then averaged over the samples that have at least one valid proposal.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IOP_LOSS_SCALE = 50.0


def overlap_targets(
    proposal_masks: np.ndarray, target: np.ndarray, ignore: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(IoU K, IoP K) float32 of each K x H x W proposal with the H x W target, ignore pixels left out.

    IoU = |P ∩ G| / |P ∪ G| and IoP = |P ∩ G| / |P|, counted outside the ignore region; a zero
    denominator gives 0 (an empty proposal is never a good pick).
    """
    if proposal_masks.ndim != 3 or proposal_masks.shape[1:] != target.shape:
        raise ValueError(f"proposals {proposal_masks.shape} and target {target.shape} must share H x W")
    if ignore is not None and ignore.shape != target.shape:
        raise ValueError(f"ignore region {ignore.shape} must have the target's shape {target.shape}")
    count = len(proposal_masks)
    proposals = proposal_masks.reshape(count, target.size).astype(bool)
    gold = target.reshape(-1).astype(bool)
    if ignore is not None:
        scored = ~ignore.reshape(-1).astype(bool)
        proposals = proposals & scored
        gold = gold & scored
    intersection = np.count_nonzero(proposals & gold, axis=1)
    area = np.count_nonzero(proposals, axis=1)
    union = area + np.count_nonzero(gold) - intersection
    iou = np.divide(intersection, union, out=np.zeros(count), where=union > 0)
    iop = np.divide(intersection, area, out=np.zeros(count), where=area > 0)
    return iou.astype(np.float32), iop.astype(np.float32)


def _mean_over_samples(per_sample: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Average over samples with at least one valid proposal; zero (still differentiable) when none has."""
    has_any = valid.any(dim=1)
    if not has_any.any():
        return per_sample.sum() * 0.0
    return per_sample[has_any].mean()


def alignment_loss(
    similarity: torch.Tensor, iou_target: torch.Tensor, valid: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(softmax(iou/τ) || softmax(sim/τ)) over the valid proposals of each (B, K) row, mean over rows."""
    lowest = torch.finfo(similarity.dtype).min
    log_predicted = torch.log_softmax((similarity / temperature).masked_fill(~valid, lowest), dim=1)
    target = torch.softmax((iou_target.to(similarity.dtype) / temperature).masked_fill(~valid, lowest), dim=1)
    target = target * valid
    pointwise = F.kl_div(torch.where(valid, log_predicted, 0.0), target, reduction="none")
    return _mean_over_samples(pointwise.sum(dim=1), valid)


def iop_loss(iop_pred: torch.Tensor, iop_target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Squared error weighted by exp(IoP_gt - 1) (good proposals count more), over valid (B, K) entries."""
    iop_target = iop_target.to(iop_pred.dtype)
    weighted = torch.exp(iop_target - 1.0) * (iop_pred - iop_target) ** 2 * valid
    per_sample = weighted.sum(dim=1) / valid.sum(dim=1).clamp_min(1) * IOP_LOSS_SCALE
    return _mean_over_samples(per_sample, valid)


ANCHOR_IOU = 0.5  # a proposal this close to an anchor object counts as that anchor


def anchor_targets(proposal_masks: np.ndarray, anchors: list[np.ndarray]) -> np.ndarray:
    """(K,) float32: each K x H x W proposal's best IoU with any of the question's anchor masks (0 if none)."""
    if not anchors:
        return np.zeros(len(proposal_masks), np.float32)
    return np.max([overlap_targets(proposal_masks, anchor)[0] for anchor in anchors], axis=0)


def anchor_loss(logit: torch.Tensor, anchor_iou: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the (B, K) anchor logits against the proposals with IoU >= 0.5 with an anchor
    (shared equally), over the rows that have such a proposal; zero when no row has one."""
    hits = (anchor_iou >= ANCHOR_IOU) & valid
    rows = hits.any(dim=1)
    if not rows.any():
        return logit.sum() * 0.0
    lowest = torch.finfo(logit.dtype).min
    log_probability = torch.log_softmax(logit.masked_fill(~valid, lowest), dim=1)
    target = hits.to(logit.dtype) / hits.sum(dim=1, keepdim=True).clamp_min(1)
    per_row = -(target * torch.where(hits, log_probability, 0.0)).sum(dim=1)
    return per_row[rows].mean()


def existence_loss(logit: torch.Tensor, has_target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the (B,) "any target" logits against (B,) bool labels."""
    return F.binary_cross_entropy_with_logits(logit, has_target.to(logit.dtype))
