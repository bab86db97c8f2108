"""Reasoning-segmentation metrics with LISA's conventions, computed in the RLE domain.

Per sample, with prediction P, ground truth G and ignore region R (pixels excluded from scoring):
I = |P ∩ G \\ R| and U = |(P ∪ G) \\ R|. gIoU is the mean of I/U with a sample whose U is 0 (both
empty outside R) scoring 1.0; cIoU is ΣI/ΣU. Set algebra on areas keeps everything in RLE:
|P ∪ G| = |P| + |G| - |P ∩ G|, and the parts inside R are subtracted the same way, so no mask is
decoded except for ncIoU, which resizes.

Every mask argument here is already validated and in pycocotools form (``eval.rle.validate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from eval.rle import areas

NCIOU_SIZE = 1024
# Resample indices are drawn in blocks of at most this many, to bound memory on large splits.
_BOOTSTRAP_BLOCK = 1 << 22


def intersection_union(
    predictions: Sequence[dict[str, Any]],
    masks: Sequence[dict[str, Any]],
    ignores: Sequence[dict[str, Any] | None],
    *,
    prediction_areas: np.ndarray | None = None,
    mask_areas: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample I and U (int64 arrays) of aligned predictions, ground truths and ignore regions.

    ``prediction_areas`` and ``mask_areas``, when given, are the masks' foreground pixel counts (as
    ``eval.rle.validate_with_areas`` finds them), which saves measuring them again.
    A merge is only made where both sides have pixels: an intersection with an empty mask is empty,
    which skips the pycocotools calls for empty predictions and no-target samples.
    """
    pred_area = areas(list(predictions)) if prediction_areas is None else np.asarray(prediction_areas, np.int64)
    mask_area = areas(list(masks)) if mask_areas is None else np.asarray(mask_areas, np.int64)
    if not len(pred_area) == len(mask_area) == len(predictions):
        raise ValueError("the areas must have one entry per sample")
    both, pred_and_mask = _intersections(predictions, masks, (pred_area > 0) & (mask_area > 0))
    intersection = both.copy()
    union = pred_area + mask_area - both
    ignored = np.array([region is not None for region in ignores], dtype=bool)
    if ignored.any():
        pred_in, _ = _intersections(predictions, ignores, ignored & (pred_area > 0))
        mask_in, _ = _intersections(masks, ignores, ignored & (mask_area > 0))
        # P ∩ G ∩ R from the P ∩ G just merged: what pycocotools' three-way merge computes, one merge fewer.
        both_in, _ = _intersections(pred_and_mask, ignores, ignored & (both > 0))
        intersection -= both_in
        union -= pred_in + mask_in - both_in
    return intersection, union


def _intersections(
    first: Sequence[dict[str, Any] | None], second: Sequence[dict[str, Any] | None], where: np.ndarray
) -> tuple[np.ndarray, list[dict[str, Any] | None]]:
    """|first ∩ second| per sample where ``where`` holds (both masks there present), 0 elsewhere; and the
    intersections themselves (pycocotools form) where they were merged, None elsewhere."""
    out = np.zeros(len(where), dtype=np.int64)
    chosen = np.flatnonzero(where).tolist()
    merged = [mask_utils.merge([first[i], second[i]], intersect=True) for i in chosen]
    out[chosen] = areas(merged)
    by_sample: list[dict[str, Any] | None] = [None] * len(where)
    for i, rle in zip(chosen, merged, strict=True):
        by_sample[i] = rle
    return out, by_sample


def resized_intersection_union(
    predictions: Sequence[dict[str, Any]],
    masks: Sequence[dict[str, Any]],
    ignores: Sequence[dict[str, Any] | None],
    size: int = NCIOU_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample I and U after resizing every mask to ``size`` x ``size`` (nearest), for ncIoU.

    Resizing has no RLE form, so this decodes each sample; it only runs when ncIoU is asked for.
    """
    import cv2  # only ncIoU needs OpenCV

    def resized(coco: dict[str, Any]) -> np.ndarray:
        return cv2.resize(mask_utils.decode(coco), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)

    intersection = np.zeros(len(masks), dtype=np.int64)
    union = np.zeros(len(masks), dtype=np.int64)
    for i, (pred, mask, ignore) in enumerate(zip(predictions, masks, ignores, strict=True)):
        p, g = resized(pred), resized(mask)
        keep = ~resized(ignore) if ignore is not None else np.ones_like(p)
        intersection[i] = np.count_nonzero(p & g & keep)
        union[i] = np.count_nonzero((p | g) & keep)
    return intersection, union


def sample_iou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """I/U per sample, 1.0 where U is 0 (prediction and ground truth both empty)."""
    return np.divide(intersection, union, out=np.ones(len(union)), where=union > 0)


def giou(intersection: np.ndarray, union: np.ndarray) -> float:
    """Mean per-sample IoU."""
    return float(sample_iou(intersection, union).mean())


def ciou(intersection: np.ndarray, union: np.ndarray) -> float:
    """Cumulative IoU ΣI/ΣU; 1.0 when every sample is empty on both sides (as gIoU scores them)."""
    total_union = int(union.sum())
    return float(intersection.sum() / total_union) if total_union else 1.0


def bootstrap_ci95(
    intersection: np.ndarray, union: np.ndarray, *, n_resamples: int, seed: int
) -> dict[str, list[float] | None]:
    """Percentile 95% intervals of gIoU and cIoU over samples drawn with replacement.

    Every resample is a row of indices into the per-sample arrays, so one gather and one sum per
    block of rows does the work; the same ``seed`` gives the same intervals.
    """
    if n_resamples == 0:
        return {"giou": None, "ciou": None}
    n = len(union)
    rng = np.random.default_rng(seed)
    ious = sample_iou(intersection, union)
    giou_draws, ciou_draws = [], []
    rows_per_block = max(1, _BOOTSTRAP_BLOCK // max(n, 1))
    for start in range(0, n_resamples, rows_per_block):
        index = rng.integers(0, n, size=(min(rows_per_block, n_resamples - start), n))
        giou_draws.append(ious[index].mean(axis=1))
        total_i, total_u = intersection[index].sum(axis=1), union[index].sum(axis=1)
        ciou_draws.append(np.divide(total_i, total_u, out=np.ones(len(total_u)), where=total_u > 0))
    return {
        name: [float(v) for v in np.percentile(np.concatenate(draws), [2.5, 97.5])]
        for name, draws in (("giou", giou_draws), ("ciou", ciou_draws))
    }
