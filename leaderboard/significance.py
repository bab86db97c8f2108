"""Paired comparison of two submissions on one split: score differences, intervals and p-values.

Both submissions are scored on the same samples, so their per-sample results are paired; tests
that ignore the pairing (e.g. checking whether two unpaired intervals overlap) are far too weak.

* **Interval**: a 95% paired-bootstrap percentile interval of the difference A - B. Each
  resample draws n sample indices with replacement and scores *both* submissions on those same
  samples. The indices come from ``np.random.default_rng(seed).integers(0, n, size=n)``, one
  call's worth per resample, which is the stream ``eval.metrics.bootstrap_ci95`` uses: for the
  same seed the paired resamples are the ones behind each row's own interval in the table.
* **p-value**: a two-sided paired sign-flip permutation test (approximate randomisation). Under
  the null hypothesis that A and B are exchangeable on every sample, swapping their per-sample
  results (I and U, hence IoU) on any subset of samples leaves the distribution of the
  difference unchanged. Each of the ``n_resamples`` permutations swaps each sample with
  probability 1/2 and recomputes the difference (the swaps of one permutation are the first n
  bits, lowest first, of ``ceil(n / 64)`` uint64 words drawn from
  ``np.random.default_rng((seed, 1)).integers(0, 2**64, dtype=np.uint64)``, so 64 samples cost
  one draw); p = (1 + #{|permuted| >= |observed|}) / (1 + n_resamples). The +1
  counts the observed assignment itself, which keeps the test valid (never p = 0) and makes a
  submission against itself p = 1 exactly; the smallest p it can report is 1 / (1 + n_resamples).
  A permutation test is exact under its null for any number of samples, where a bootstrap test
  of the centred difference is only asymptotically right; the two can disagree at the margin (an
  interval just excluding 0 with p just above 0.05).

Everything is vectorised: a block of resamples is a matrix of per-sample weights (bootstrap
counts, or swap indicators), and every statistic is one matrix product with the per-sample
columns. The same is done per tag, on the tag's samples, each subset starting from the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval.metrics import sample_iou

# Resamples are drawn in blocks of at most this many weights, to bound memory on large splits.
_BLOCK = 1 << 22
# Permuted differences within this relative distance of the observed one count as "as extreme".
_TIES = 1e-12
MAX_RESAMPLES = 100_000


@dataclass(frozen=True)
class SampleCounts:
    """Per-sample intersection and union areas (int64, one entry per sample, in the split's order)."""

    intersection: np.ndarray
    union: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "intersection", np.asarray(self.intersection, dtype=np.int64))
        object.__setattr__(self, "union", np.asarray(self.union, dtype=np.int64))
        if self.intersection.shape != self.union.shape or self.intersection.ndim != 1:
            raise ValueError("intersection and union must be 1-D arrays of the same length")

    def __len__(self) -> int:
        return len(self.union)

    def subset(self, rows: np.ndarray) -> SampleCounts:
        return SampleCounts(self.intersection[rows], self.union[rows])

    def iou(self) -> np.ndarray:
        """IoU per sample (1.0 where both masks are empty), as the evaluation core scores it."""
        return sample_iou(self.intersection, self.union)


def compare(
    a: SampleCounts,
    b: SampleCounts,
    tags: Sequence[Sequence[str]],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """gIoU and cIoU differences (A - B, fractions) with 95% paired-bootstrap intervals and
    two-sided sign-flip p-values, overall and per tag.

    ``tags[i]`` are sample i's tags. Returns ``giou_diff``, ``giou_ci95`` ([low, high]),
    ``giou_p``, the same for cIoU, each side's scores (``giou_a`` ...), ``n``, and ``by_tag``
    mapping each tag to the same keys computed on its samples.
    """
    if len(a) != len(b) or len(a) != len(tags):
        raise ValueError("both submissions and the tags need one entry per sample of the same split")
    if len(a) == 0:
        raise ValueError("the split has no samples to compare on")
    check_resamples(n_resamples)
    result = _compare_subset(a, b, n_resamples, seed)
    result["by_tag"] = {}
    for tag in sorted({tag for sample_tags in tags for tag in sample_tags}):
        rows = np.array([tag in sample_tags for sample_tags in tags])
        result["by_tag"][tag] = _compare_subset(a.subset(rows), b.subset(rows), n_resamples, seed)
    return result


def check_resamples(n_resamples: int) -> None:
    """Refuse a resample count that is not an integer in [1, ``MAX_RESAMPLES``] (bounded: it is CPU time)."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or not 1 <= n_resamples <= MAX_RESAMPLES:
        raise ValueError(f"the number of resamples must be an integer from 1 to {MAX_RESAMPLES}, got {n_resamples!r}")


def format_p(p: float) -> str:
    """Three decimals, or "<0.001" below that (the smallest p is 1 / (1 + resamples))."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _compare_subset(a: SampleCounts, b: SampleCounts, n_resamples: int, seed: int) -> dict[str, Any]:
    n = len(a)
    iou_a, iou_b = a.iou(), b.iou()
    giou_a, giou_b = float(iou_a.mean()), float(iou_b.mean())
    ciou_a, ciou_b = _ciou(a.intersection.sum(), a.union.sum()), _ciou(b.intersection.sum(), b.union.sum())
    giou_draws, ciou_draws = _bootstrap(a, b, iou_a, iou_b, n_resamples, seed)
    giou_flips, ciou_flips = _sign_flips(a, b, iou_a, iou_b, n_resamples, seed)
    giou_diff, ciou_diff = giou_a - giou_b, float(ciou_a - ciou_b)
    return {
        "n": n,
        "giou_a": giou_a,
        "giou_b": giou_b,
        "giou_diff": giou_diff,
        "giou_ci95": _percentile_interval(giou_draws),
        "giou_p": _p_value(giou_flips, giou_diff),
        "ciou_a": float(ciou_a),
        "ciou_b": float(ciou_b),
        "ciou_diff": ciou_diff,
        "ciou_ci95": _percentile_interval(ciou_draws),
        "ciou_p": _p_value(ciou_flips, ciou_diff),
    }


def _blocks(n: int, n_resamples: int) -> list[int]:
    rows = max(1, _BLOCK // n)
    return [min(rows, n_resamples - start) for start in range(0, n_resamples, rows)]


def _bootstrap(
    a: SampleCounts, b: SampleCounts, iou_a: np.ndarray, iou_b: np.ndarray, n_resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Differences of gIoU and cIoU over paired resamples: one index draw scores both sides."""
    n = len(a)
    columns = np.column_stack([iou_a - iou_b, a.intersection, a.union, b.intersection, b.union]).astype(np.float64)
    rng = np.random.default_rng(seed)
    giou, ciou = [], []
    for rows in _blocks(n, n_resamples):
        index = rng.integers(0, n, size=(rows, n))
        # How often each sample was drawn in each resample; sums over a resample become one product.
        counts = np.bincount((index + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n).reshape(rows, n)
        sums = counts.astype(np.float64) @ columns
        giou.append(sums[:, 0] / n)
        ciou.append(_ciou(sums[:, 1], sums[:, 2]) - _ciou(sums[:, 3], sums[:, 4]))
    return np.concatenate(giou), np.concatenate(ciou)


def _sign_flips(
    a: SampleCounts, b: SampleCounts, iou_a: np.ndarray, iou_b: np.ndarray, n_resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Differences of gIoU and cIoU after swapping A and B on a random half of the samples."""
    n = len(a)
    # What swapping sample i moves from B's side to A's side (and back).
    moved = np.column_stack([iou_b - iou_a, b.intersection - a.intersection, b.union - a.union]).astype(np.float64)
    giou_diff = float((iou_a - iou_b).sum())
    totals = np.array([a.intersection.sum(), a.union.sum(), b.intersection.sum(), b.union.sum()], dtype=np.float64)
    rng = np.random.default_rng((seed, 1))
    giou, ciou = [], []
    for rows in _blocks(n, n_resamples):
        words = rng.integers(0, 2**64, size=(rows, -(-n // 64)), dtype=np.uint64)
        swaps = np.unpackbits(words.view(np.uint8), axis=1, count=n, bitorder="little")
        swapped = swaps.astype(np.float64) @ moved
        giou.append((giou_diff + 2 * swapped[:, 0]) / n)
        intersection_a, union_a = totals[0] + swapped[:, 1], totals[1] + swapped[:, 2]
        intersection_b, union_b = totals[2] - swapped[:, 1], totals[3] - swapped[:, 2]
        ciou.append(_ciou(intersection_a, union_a) - _ciou(intersection_b, union_b))
    return np.concatenate(giou), np.concatenate(ciou)


def _ciou(intersection: Any, union: Any) -> Any:
    """ΣI/ΣU, 1.0 where ΣU is 0 (as ``eval.metrics.ciou``), for scalars or arrays of sums."""
    intersection, union = np.asarray(intersection, dtype=np.float64), np.asarray(union, dtype=np.float64)
    return np.divide(intersection, union, out=np.ones_like(union), where=union > 0)


def _percentile_interval(draws: np.ndarray) -> list[float]:
    return [float(v) for v in np.percentile(draws, [2.5, 97.5])]


def _p_value(permuted: np.ndarray, observed: float) -> float:
    """Two-sided: the share of permutations at least as far from 0 as the observed difference."""
    extreme = np.abs(permuted) >= abs(observed) * (1 - _TIES)
    return float((1 + np.count_nonzero(extreme)) / (1 + len(permuted)))
