"""Scoring against the held-out split through the evaluation core, and nothing else.

The ground truth is decoded once per process into a private ``References`` object; what leaves
this module is the evaluation summary (aggregate scores and intervals) and the per-sample
intersection and union areas, which the leaderboard keeps in its store for paired comparisons
and hands out only as aggregates (or, as IoU, to the submission's own submitter). Never a mask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets

from eval import PredictionsError, References, evaluate, load_split
from eval.rle import RLE

from .significance import SampleCounts
from .submission import SubmissionRejected

_FINGERPRINT_COLUMNS = ("id", "mask", "ignore", "tags", "height", "width")


@dataclass(frozen=True)
class Scored:
    """One file's evaluation summary (``Report.to_dict()``) and its per-sample counts."""

    summary: dict[str, Any]
    counts: SampleCounts


class Scorer:
    """Scores predictions against one held-out split; holds its ground truth privately."""

    def __init__(self, data: str, split: str, *, token: str | None = None) -> None:
        dataset = load_split(data, split, token=token)
        self.references_key = fingerprint(dataset)
        self._references = References.from_split(dataset)

    @property
    def ids(self) -> list[str]:
        """The split's sample ids in order (public: every submission lists them)."""
        return list(self._references.ids)

    @property
    def tags(self) -> Sequence[Sequence[str]]:
        """Each sample's tags, in order (public: the public copy of the split carries them)."""
        return [list(tags) for tags in self._references.tags]

    def score(self, predictions: dict[str, RLE]) -> Scored:
        """Evaluate with the core's defaults (as ``python -m eval`` does); bad ids or sizes are rejected."""
        try:
            report = evaluate(predictions, self._references)
        except PredictionsError as error:
            raise SubmissionRejected(str(error)) from None
        per_sample = report.per_sample
        return Scored(report.to_dict(), SampleCounts(per_sample["intersection"], per_sample["union"]))


def fingerprint(dataset: datasets.Dataset) -> str:
    """A sha256 over every value that affects a score (ids, masks, ignore regions, tags, sizes).

    Cached scores carry it, so they are recomputed when the ground truth changes.
    """
    digest = hashlib.sha256()
    columns = [name for name in _FINGERPRINT_COLUMNS if name in dataset.column_names]
    for batch in dataset.select_columns(columns).with_format("arrow").iter(batch_size=1000):
        for row in batch.to_pylist():
            for name in columns:
                value = row[name]
                if isinstance(value, dict):  # an Image struct: its encoded bytes
                    value = value.get("bytes")
                encoded = value if isinstance(value, bytes) else repr(value).encode()
                digest.update(len(encoded).to_bytes(8, "little"))
                digest.update(encoded)
    return digest.hexdigest()
