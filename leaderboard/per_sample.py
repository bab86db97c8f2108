"""What the leaderboard does with the per-sample results it keeps: paired comparisons, and a
submitter's download of their own per-sample IoU.

Per-sample I and U never leave through a comparison (only its aggregates do). A submitter may
download the per-sample IoU of their own submissions, unless the benchmark sets
``private_per_sample``: with per-sample scores of many chosen prediction files, anyone could
reconstruct the hidden ground truth one sample at a time. Rows scored before per-sample counts
were kept are backfilled on first use by rescoring their stored raw file.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import significance
from .benchmarks import Benchmark
from .scoring import Scorer
from .significance import SampleCounts
from .store import BaselineScore, Store, StoredSubmission
from .submission import SubmissionRejected, parse_predictions

if TYPE_CHECKING:
    import pandas as pd

BASELINE_PREFIX = "baseline:"
METHOD = (
    "A - B; 95% paired-bootstrap percentile interval (the same resampled samples for both); "
    "two-sided paired sign-flip permutation p-value, (1 + #as extreme) / (1 + resamples)"
)


class Refused(ValueError):
    """A comparison or download the leaderboard will not give; the message is one sentence saying why."""


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a scored submission or a baseline, resolved on its benchmark."""

    ref: str
    label: str
    benchmark: str
    submission: StoredSubmission | None = None
    baseline: BaselineScore | None = None


class PerSampleResults:
    """Compares stored submissions and hands out a submitter's own per-sample IoU."""

    def __init__(
        self, store: Store, scorers: Mapping[str, Scorer], benchmark: Callable[[str | None], Benchmark]
    ) -> None:
        self._store = store
        self._scorers = scorers
        self._benchmark = benchmark

    # comparing

    def compare(
        self,
        a: int | str,
        b: int | str,
        *,
        benchmark: str | None = None,
        n_resamples: int = 1000,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Paired comparison of ``a`` and ``b`` (submission ids, or ``baseline:NAME``); see
        ``leaderboard.significance`` for the interval and the p-value. Raises ``Refused``."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise Refused(f"the seed must be a non-negative integer, got {seed!r}")
        try:
            significance.check_resamples(n_resamples)
        except ValueError as error:
            raise Refused(str(error)) from None
        chosen = self._chosen_benchmark(benchmark)
        refs = [_parse_ref(a), _parse_ref(b)]
        submissions = [self._submission(ref) for ref in refs if isinstance(ref, int)]
        on = sorted({row.benchmark for row in submissions})
        if len(on) > 1:
            first, second = submissions
            raise Refused(
                f"submission #{first.id} is on benchmark {first.benchmark} and #{second.id} on {second.benchmark}: "
                "compare two submissions of one benchmark"
            )
        if chosen is not None and on and on[0] != chosen:
            raise Refused(
                f"submission #{submissions[0].id} is on benchmark {on[0]}, not {chosen}: "
                "compare submissions of the benchmark you name"
            )
        name = on[0] if on else chosen if chosen is not None else self._benchmark(None).name
        sides = [self._side(ref, name) for ref in refs]
        scorer = self._scorers[name]
        result = significance.compare(
            self._counts(sides[0]), self._counts(sides[1]), scorer.tags, n_resamples=n_resamples, seed=seed
        )
        by_tag = result.pop("by_tag")
        return {
            "benchmark": name,
            "a": {"ref": sides[0].ref, "label": sides[0].label},
            "b": {"ref": sides[1].ref, "label": sides[1].label},
            **result,
            "by_tag": by_tag,
            "n_resamples": n_resamples,
            "seed": seed,
            "method": METHOD,
        }

    def comparable(self, benchmark: str | None = None) -> list[tuple[str, str]]:
        """(label, ref) for every scored submission (newest first) and baseline of a benchmark."""
        name = self._benchmark(benchmark).name
        key = self._scorers[name].references_key
        rows = self._store.submissions("scored", benchmark=name)
        choices = [(_submission_label(row), str(row.id)) for row in reversed(rows)]
        baselines = [b.name for b in self._store.baselines(name) if b.references_key == key]
        choices += [(f"baseline {b}", BASELINE_PREFIX + b) for b in baselines]
        return choices

    def _chosen_benchmark(self, benchmark: str | None) -> str | None:
        if benchmark is None or not str(benchmark).strip():
            return None
        try:
            return self._benchmark(benchmark).name
        except ValueError as error:
            raise Refused(str(error)) from None

    def _submission(self, submission_id: int) -> StoredSubmission:
        row = self._store.get(submission_id)
        if row is None:
            raise Refused(f"there is no submission #{submission_id}: use a number from the table's id column")
        if row.status != "scored":
            raise Refused(f"submission #{submission_id} is {row.status}, not scored: only scored submissions count")
        if row.benchmark not in self._scorers:
            raise Refused(
                f"submission #{submission_id} is on benchmark {row.benchmark}, which this leaderboard no longer scores"
            )
        return row

    def _side(self, ref: int | str, benchmark: str) -> Side:
        if isinstance(ref, int):
            row = self._submission(ref)
            return Side(str(ref), _submission_label(row), benchmark, row)
        key = self._scorers[benchmark].references_key
        cached = self._store.baseline(benchmark, ref)
        if cached is None or cached.references_key != key:
            known = ", ".join(b.name for b in self._store.baselines(benchmark) if b.references_key == key) or "none"
            raise Refused(f"there is no baseline {ref!r} on benchmark {benchmark}: its baselines are {known}")
        return Side(BASELINE_PREFIX + ref, f"baseline {ref}", benchmark, baseline=cached)

    def _counts(self, side: Side) -> SampleCounts:
        scorer = self._scorers[side.benchmark]
        if side.baseline is not None:
            return self._baseline_counts(side.baseline, scorer)
        assert side.submission is not None  # a Side is one or the other
        return self._submission_counts(side.submission, scorer)

    def _baseline_counts(self, cached: BaselineScore, scorer: Scorer) -> SampleCounts:
        """The stored counts, or (for a cache older than them) the baseline's file rescored."""
        stored = self._store.baseline_per_sample(cached.benchmark, cached.name)
        if stored is not None and stored[0] == scorer.references_key:
            return stored[1]
        folder = self._benchmark(cached.benchmark).resolved_baselines_dir()
        path = folder / f"{cached.name}.jsonl" if folder is not None else None
        content = path.read_bytes() if path is not None and path.is_file() else None
        if content is None or hashlib.sha256(content).hexdigest() != cached.file_sha256:
            raise Refused(
                f"the file of baseline {cached.name} changed or went away: restart the leaderboard to rescore it"
            )
        scored = scorer.score(parse_predictions(content))
        self._store.save_baseline_per_sample(
            cached.benchmark, cached.name, scored.counts, references_key=scorer.references_key
        )
        return scored.counts

    def _submission_counts(self, row: StoredSubmission, scorer: Scorer) -> SampleCounts:
        """The stored counts, or (for a row scored before they were kept) its raw file rescored."""
        stored = self._store.per_sample(row.id)
        if stored is not None and stored[0] == scorer.references_key:
            return stored[1]
        try:
            scored = scorer.score(parse_predictions(self._store.read_blob(row.file_sha256)))
        except FileNotFoundError:
            raise Refused(f"the stored predictions file of submission #{row.id} is missing: submit it again") from None
        except SubmissionRejected as error:
            raise Refused(f"submission #{row.id} no longer matches the ground truth: {error}") from None
        self._store.save_per_sample(row.id, scored.counts, references_key=scorer.references_key)
        return scored.counts

    # downloading one's own

    def download(self, submission: int | str, *, user: str) -> pd.DataFrame:
        """The per-sample IoU (``id``, ``tags``, ``iou``) of ``user``'s own scored submission.

        Refused (``Refused``) for someone else's submission, a baseline, and any submission to a
        benchmark with ``private_per_sample``.
        """
        ref = _parse_ref(submission)
        if not isinstance(ref, int):
            raise Refused("baselines have no submitter: download the per-sample results of your own submissions")
        row = self._submission(ref)
        benchmark = self._benchmark(row.benchmark)
        if benchmark.private_per_sample:
            raise Refused(
                f"benchmark {benchmark.name} keeps per-sample results private: "
                "per-sample scores over many submissions would leak its ground truth"
            )
        if row.user != _clean_user(user):
            raise Refused(
                f"submission #{row.id} is not yours: "
                "you can download the per-sample results of your own submissions only"
            )
        scorer = self._scorers[row.benchmark]
        counts = self._submission_counts(row, scorer)
        import pandas as pd

        return pd.DataFrame({"id": scorer.ids, "tags": [",".join(t) for t in scorer.tags], "iou": counts.iou()})


def _parse_ref(value: int | str) -> int | str:
    """A submission id (``12``, ``"12"``, ``"#12"``) as an int, or ``"baseline:NAME"`` as NAME."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.startswith(BASELINE_PREFIX) and text[len(BASELINE_PREFIX) :].strip():
        return text[len(BASELINE_PREFIX) :].strip()
    digits = text.removeprefix("#")
    if digits.isascii() and digits.isdigit():
        return int(digits)
    raise Refused(f"{text!r} is not a submission id: give the number from the table's id column or baseline:NAME")


def _submission_label(row: StoredSubmission) -> str:
    return f"#{row.id} {row.model_name} ({row.user})"


def _clean_user(user: str) -> str:
    """The user name as the submission stored it (stripped, NFC)."""
    return unicodedata.normalize("NFC", str(user or "").strip())
