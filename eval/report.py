"""The result of one evaluation: overall and per-tag scores with confidence intervals, per-sample rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eval import metrics

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Report:
    """Scores as fractions in [0, 1].

    ``by_tag`` maps each tag found in the split to ``{"giou", "ciou", "n", "ci95"}``; ``ci95`` holds
    seeded bootstrap percentile intervals ``{"giou": [lo, hi], "ciou": [lo, hi]}`` (``None`` when no
    resampling was asked for); ``nciou`` is set only when asked for. ``per_sample`` has one row per
    sample: ``id``, ``intersection``, ``union``, ``iou``, ``tags`` (comma-separated).
    """

    giou: float
    ciou: float
    n: int
    nciou: float | None
    by_tag: dict[str, dict[str, Any]]
    ci95: dict[str, list[float] | None]
    # (ids, intersection, union, tags) behind ``per_sample``, built on first use (pandas is slow to import).
    counts: tuple[Sequence[str], np.ndarray, np.ndarray, Sequence[Sequence[str]]] = field(repr=False)

    @cached_property
    def per_sample(self) -> pd.DataFrame:
        """One row per sample: id, intersection, union, iou, tags (comma-separated)."""
        import pandas as pd

        ids, intersection, union, tags = self.counts
        return pd.DataFrame(
            {
                "id": list(ids),
                "intersection": intersection,
                "union": union,
                "iou": metrics.sample_iou(intersection, union),
                "tags": [",".join(sample_tags) for sample_tags in tags],
            }
        )

    @classmethod
    def from_counts(
        cls,
        ids: Sequence[str],
        intersection: np.ndarray,
        union: np.ndarray,
        tags: Sequence[Sequence[str]],
        *,
        nciou: float | None = None,
        n_bootstrap: int = 1000,
        seed: int = 0,
    ) -> Report:
        """Aggregate per-sample I and U overall and per tag (each tag resampled with the same seed)."""
        rows_of: dict[str, list[int]] = {}  # one pass over the samples, not one per tag
        for row, sample_tags in enumerate(tags):
            for tag in sample_tags:
                rows = rows_of.setdefault(tag, [])
                if not rows or rows[-1] != row:  # a tag repeated on one sample counts it once
                    rows.append(row)
        by_tag: dict[str, dict[str, Any]] = {}
        for tag in sorted(rows_of):
            rows = np.array(rows_of[tag], dtype=np.int64)
            by_tag[tag] = _scores(intersection[rows], union[rows], n_bootstrap, seed)
        overall = _scores(intersection, union, n_bootstrap, seed)
        return cls(
            giou=overall["giou"],
            ciou=overall["ciou"],
            n=overall["n"],
            nciou=nciou,
            by_tag=by_tag,
            ci95=overall["ci95"],
            counts=(ids, intersection, union, tags),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-sample rows); ``nciou`` only when it was computed."""
        result: dict[str, Any] = {"giou": self.giou, "ciou": self.ciou, "n": self.n}
        if self.nciou is not None:
            result["nciou"] = self.nciou
        result["ci95"] = self.ci95
        result["by_tag"] = self.by_tag
        return result

    def to_table(self) -> str:
        """A plain-text table in percent: overall, then one row per tag, with 95% intervals."""
        header = f"{'subset':<16} {'n':>7}  {'gIoU':>6}  {'95% CI':<16} {'cIoU':>6}  {'95% CI':<16}"
        lines = [header, "-" * len(header)]
        rows = [("overall", {"giou": self.giou, "ciou": self.ciou, "n": self.n, "ci95": self.ci95})]
        rows += list(self.by_tag.items())
        for name, scores in rows:
            lines.append(
                f"{name:<16} {scores['n']:>7}  {100 * scores['giou']:>6.2f}  {_interval(scores['ci95']['giou']):<16} "
                f"{100 * scores['ciou']:>6.2f}  {_interval(scores['ci95']['ciou']):<16}"
            )
        if self.nciou is not None:
            lines.append(f"ncIoU (masks resized to {metrics.NCIOU_SIZE}x{metrics.NCIOU_SIZE}): {100 * self.nciou:.2f}")
        return "\n".join(line.rstrip() for line in lines)

    def write_per_sample_csv(self, path: str | Path) -> None:
        """Write the per-sample rows (id, intersection, union, iou, tags) as CSV."""
        self.per_sample.to_csv(path, index=False)


def _scores(intersection: np.ndarray, union: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    return {
        "giou": metrics.giou(intersection, union),
        "ciou": metrics.ciou(intersection, union),
        "n": len(union),
        "ci95": metrics.bootstrap_ci95(intersection, union, n_resamples=n_bootstrap, seed=seed),
    }


def _interval(bounds: list[float] | None) -> str:
    return "-" if bounds is None else f"[{100 * bounds[0]:.2f}, {100 * bounds[1]:.2f}]"
