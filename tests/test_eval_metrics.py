"""Metrics: LISA's conventions on hand-computed cases, and RLE-domain counts against dense counting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eval import metrics, rle


def coco(mask: np.ndarray) -> dict:
    return rle.to_pycoco(rle.encode(mask))


def box(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


def counts(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray]:
    """I and U, measured both ways: the areas found by pycocotools, and the ones validation hands over."""
    predictions, masks = [coco(p) for p, _, _ in pairs], [coco(g) for _, g, _ in pairs]
    ignores = [None if r is None else coco(r) for *_, r in pairs]
    measured = metrics.intersection_union(predictions, masks, ignores)
    given_areas = metrics.intersection_union(
        predictions,
        masks,
        ignores,
        prediction_areas=np.array([p.sum() for p, _, _ in pairs]),
        mask_areas=np.array([g.sum() for _, g, _ in pairs]),
    )
    assert all(np.array_equal(a, b) and b.dtype == np.int64 for a, b in zip(measured, given_areas, strict=True))
    return measured


EMPTY = np.zeros((4, 5), dtype=bool)
FULL = np.ones((4, 5), dtype=bool)


def test_both_empty_scores_one() -> None:
    intersection, union = counts([(EMPTY, EMPTY, None)])
    assert (intersection[0], union[0]) == (0, 0)
    assert metrics.giou(intersection, union) == 1.0
    assert metrics.ciou(intersection, union) == 1.0


def test_empty_prediction_on_a_target_scores_zero() -> None:
    intersection, union = counts([(EMPTY, box((4, 5), slice(1, 3), slice(0, 2)), None)])
    assert (intersection[0], union[0]) == (0, 4)
    assert metrics.giou(intersection, union) == 0.0


def test_prediction_on_empty_ground_truth_scores_zero() -> None:
    intersection, union = counts([(box((4, 5), slice(0, 1), slice(0, 3)), EMPTY, None)])
    assert (intersection[0], union[0]) == (0, 3)
    assert metrics.giou(intersection, union) == 0.0


def test_ignore_region_is_out_of_both_intersection_and_union() -> None:
    truth = box((4, 5), slice(0, 4), slice(0, 2))  # 8 pixels, columns 0-1
    prediction = box((4, 5), slice(0, 4), slice(1, 4))  # 12 pixels, columns 1-3
    ignore = box((4, 5), slice(0, 2), slice(0, 5))  # top two rows
    intersection, union = counts([(prediction, truth, ignore)])
    # Bottom two rows only: truth 4, prediction 6, overlap 2 -> union 8.
    assert (intersection[0], union[0]) == (2, 8)


def test_everything_ignored_counts_as_both_empty() -> None:
    intersection, union = counts([(FULL, EMPTY, FULL)])
    assert (intersection[0], union[0]) == (0, 0)
    assert metrics.giou(intersection, union) == 1.0


def test_ciou_accumulates_while_giou_averages() -> None:
    big_truth = box((10, 10), slice(0, 10), slice(0, 10))  # 100 pixels, predicted half: I 50, U 100
    small_truth = box((10, 10), slice(0, 1), slice(0, 2))  # 2 pixels, predicted exactly: I 2, U 2
    intersection, union = counts(
        [(box((10, 10), slice(0, 5), slice(0, 10)), big_truth, None), (small_truth, small_truth, None)]
    )
    assert intersection.tolist() == [50, 2] and union.tolist() == [100, 2]
    assert metrics.giou(intersection, union) == pytest.approx((0.5 + 1.0) / 2)
    assert metrics.ciou(intersection, union) == pytest.approx(52 / 102)


def test_masks_of_different_sizes_in_one_batch() -> None:
    intersection, union = counts([(FULL, FULL, None), (np.ones((2, 3), bool), np.ones((2, 3), bool), None)])
    assert intersection.tolist() == [20, 6] and union.tolist() == [20, 6]


triples = st.tuples(st.integers(1, 9), st.integers(1, 9)).flatmap(
    lambda shape: st.tuples(arrays(np.bool_, shape), arrays(np.bool_, shape), st.none() | arrays(np.bool_, shape))
)


@settings(max_examples=120, deadline=None)
@given(st.lists(triples, min_size=1, max_size=5))
def test_rle_counts_equal_dense_counts(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> None:
    intersection, union = counts(samples)
    for i, (prediction, truth, ignore) in enumerate(samples):
        keep = np.ones_like(truth) if ignore is None else ~ignore
        assert intersection[i] == np.count_nonzero(prediction & truth & keep)
        assert union[i] == np.count_nonzero((prediction | truth) & keep)


def test_every_mix_of_empty_full_and_partial_masks_in_one_batch_equals_dense_counts() -> None:
    """Merges are skipped where a side is empty; every combination, ignore region or not, still counts right."""
    rng = np.random.default_rng(0)
    kinds = [EMPTY, FULL, box((4, 5), slice(0, 2), slice(1, 4)), rng.random((4, 5)) < 0.5]
    samples = [(p, g, r) for p in kinds for g in kinds for r in [None, *kinds]]
    intersection, union = counts(samples)
    for i, (prediction, truth, ignore) in enumerate(samples):
        keep = np.ones_like(truth) if ignore is None else ~ignore
        assert intersection[i] == np.count_nonzero(prediction & truth & keep)
        assert union[i] == np.count_nonzero((prediction | truth) & keep)


def test_nciou_resizes_to_1024_nearest() -> None:
    # A 2x2 image: each pixel becomes a 512x512 block, so counts scale by 512*512 exactly.
    truth = np.array([[1, 1], [0, 0]], dtype=bool)
    prediction = np.array([[1, 0], [1, 0]], dtype=bool)
    ignore = np.array([[0, 0], [1, 0]], dtype=bool)
    intersection, union = metrics.resized_intersection_union([coco(prediction)], [coco(truth)], [coco(ignore)])
    assert (intersection[0], union[0]) == (512 * 512, 2 * 512 * 512)
    # 3 rows -> 1024: nearest picks source row floor(y * 3 / 1024): 342, 341, 341 rows.
    tall = np.array([[1], [0], [0]], dtype=bool)
    intersection, union = metrics.resized_intersection_union([coco(tall)], [coco(tall)], [None])
    assert (intersection[0], union[0]) == (342 * 1024, 342 * 1024)


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(1)
    union = rng.integers(1, 100, size=300)
    intersection = (union * rng.random(300)).astype(np.int64)
    first = metrics.bootstrap_ci95(intersection, union, n_resamples=500, seed=3)
    assert first == metrics.bootstrap_ci95(intersection, union, n_resamples=500, seed=3)
    assert first != metrics.bootstrap_ci95(intersection, union, n_resamples=500, seed=4)
    for name, estimate in (("giou", metrics.giou), ("ciou", metrics.ciou)):
        low, high = first[name]
        assert low < estimate(intersection, union) < high
    # gIoU is a mean of 300 values: its 95% interval is about 4 standard errors wide.
    standard_error = np.std(metrics.sample_iou(intersection, union)) / np.sqrt(300)
    low, high = first["giou"]
    assert 3 * standard_error < high - low < 5 * standard_error
    assert metrics.bootstrap_ci95(intersection, union, n_resamples=0, seed=0) == {"giou": None, "ciou": None}


def test_bootstrap_of_identical_samples_is_a_point() -> None:
    intersection, union = np.full(50, 3), np.full(50, 4)
    assert metrics.bootstrap_ci95(intersection, union, n_resamples=200, seed=0) == {
        "giou": [0.75, 0.75],
        "ciou": [0.75, 0.75],
    }


def test_areas_must_have_one_entry_per_sample() -> None:
    with pytest.raises(ValueError, match="one entry per sample"):
        metrics.intersection_union([coco(FULL)], [coco(FULL)], [None], prediction_areas=np.array([20, 20]))
