"""Scoring against the held-out split through the evaluation core, and nothing else.

The ground truth is read once per process into a private ``References`` object, through the
ground-truth cache beside the store (``eval.cache``: one file per split fingerprint, so a restart
decodes no PNG and several benchmarks share the folder); what leaves
this module is the evaluation summary (aggregate scores and intervals) and the per-sample
intersection and union areas, which the leaderboard keeps in its store for paired comparisons
and hands out only as aggregates (or, as IoU, to the submission's own submitter). Never a mask.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eval import PredictionsError, References, evaluate
from eval.rle import RLE

from .significance import SampleCounts
from .submission import SubmissionRejected


@dataclass(frozen=True)
class Scored:
    """One file's evaluation summary (``Report.to_dict()``) and its per-sample counts."""

    summary: dict[str, Any]
    counts: SampleCounts


class Scorer:
    """Scores predictions against one held-out split; holds its ground truth privately."""

    def __init__(
        self, data: str, split: str, *, token: str | None = None, cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self._references = References.from_data(data, split, token=token, cache_dir=cache_dir)
        assert self._references.fingerprint is not None  # from_data always fingerprints
        self.references_key: str = self._references.fingerprint

    @property
    def ids(self) -> list[str]:
        """The split's sample ids in order (public: every submission lists them)."""
        return list(self._references.ids)

    @property
    def tags(self) -> Sequence[Sequence[str]]:
        """Each sample's tags, in order (public: the public copy of the split carries them)."""
        return [list(tags) for tags in self._references.tags]

    def score(self, predictions: dict[str, RLE]) -> Scored:
        """Evaluate with the core's defaults (1000 resamples: ``python -m eval --bootstrap 1000``); bad ids or sizes
        are rejected."""
        try:
            report = evaluate(predictions, self._references)
        except PredictionsError as error:
            raise SubmissionRejected(str(error)) from None
        per_sample = report.per_sample
        return Scored(report.to_dict(), SampleCounts(per_sample["intersection"], per_sample["union"]))
