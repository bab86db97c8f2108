"""The leaderboard: accepts submissions, scores them, and serves the ranked tables, per benchmark.

Lifecycle of a submission: checked (size, metadata, file format; a refusal is logged and counts
for nothing) -> stored as pending together with its raw file, inside the transaction that checks
the rate limit and duplicates -> scored against the held-out split -> marked scored. If the file
fails the ground-truth checks the pending row is turned into a logged rejection; if the process
dies meanwhile, the next start scores the pending row.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from eval.rle import RLE

from . import table as tables
from .backup import HubBackup
from .benchmarks import Benchmark
from .limits import RateLimit
from .per_sample import PerSampleResults
from .reported import reported_table
from .scoring import Scorer
from .settings import LeaderboardSettings
from .store import BaselineScore, Store, StoredSubmission
from .submission import (
    MAX_MODEL_NAME,
    MAX_USER,
    SubmissionRejected,
    clean_declaration,
    parse_predictions,
    prepare,
)

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmissionResult:
    """A scored submission: its id, scores (fractions in [0, 1]), rank among all submissions to its
    benchmark, and what the submitter declared about the model."""

    id: int
    benchmark: str
    status: str
    model_name: str
    user: str
    giou: float
    ciou: float
    n: int
    ci95: dict[str, Any]
    by_tag: dict[str, Any]
    rank: int | None
    file_sha256: str
    submitted_at: float
    protocol: str
    trained_on: str | None
    checkpoint_selection: str
    params: float | None
    code: str | None
    paper: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Leaderboard:
    """Submissions scored against one or more held-out splits (benchmarks), with a ranked table,
    baselines, plot data and CSV per benchmark, and published numbers.

    Opening it creates (or migrates) the database if needed (or restores it from the Hub backup),
    reads each benchmark's ground truth (decoded on the first start, then from the RLE cache in
    ``settings.ground_truth_dir``: a restart decodes no PNG), scores rows left pending by a crash (and rows
    scored against a ground truth that has since changed), and scores the baseline files whose
    cache is stale. ``benchmark`` arguments name a benchmark; None means the first (default) one.
    ``clock`` (seconds since the epoch) and ``hub_api`` (a ``huggingface_hub.HfApi``) are
    injectable for tests.
    """

    def __init__(
        self,
        settings: LeaderboardSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        hub_api: Any | None = None,
    ) -> None:
        self.settings = settings if settings is not None else LeaderboardSettings.from_env()
        self._clock = clock
        self._backup = HubBackup.from_settings(self.settings, api=hub_api)
        if self._backup is not None:
            self._backup.restore(self.settings.db_path, self.settings.blobs_dir)
        self.benchmarks: tuple[Benchmark, ...] = self.settings.benchmarks()
        self._store = Store(self.settings.db_path, self.settings.blobs_dir, legacy_benchmark=self.benchmarks[0].name)
        self._scorers = {benchmark.name: self._open_scorer(benchmark) for benchmark in self.benchmarks}
        self._rate_limit = RateLimit(self.settings.rate_limit_per_day)
        self._per_sample = PerSampleResults(self._store, self._scorers, self.benchmark)
        rescored = self._score_left_over()
        for benchmark in self.benchmarks:
            self._score_baselines(benchmark)
        if rescored:
            self._push_backup(rescored, message=f"rescored {len(rescored)} submission(s) on start")

    # benchmarks

    def _open_scorer(self, benchmark: Benchmark) -> Scorer:
        """The benchmark's scorer; with several benchmarks, a split that cannot load says which one it is."""
        try:
            return Scorer(
                benchmark.data, benchmark.split, token=self.settings.hf_token, cache_dir=self.settings.ground_truth_dir
            )
        except (ValueError, OSError) as error:
            if len(self.benchmarks) == 1:
                raise
            raise ValueError(f"benchmark {benchmark.name!r} cannot be opened: {error}") from None

    @property
    def default_benchmark(self) -> str:
        """The benchmark used when none is named: the first of the benchmarks file."""
        return self.benchmarks[0].name

    def benchmark(self, name: str | None = None) -> Benchmark:
        """The benchmark called ``name`` (None: the default); an unknown name is a ``ValueError``."""
        if name is None or not str(name).strip():
            return self.benchmarks[0]
        for benchmark in self.benchmarks:
            if benchmark.name == str(name).strip():
                return benchmark
        known = ", ".join(benchmark.name for benchmark in self.benchmarks)
        raise ValueError(f"there is no benchmark {str(name).strip()!r} on this leaderboard: choose one of {known}")

    # submitting

    def submit(
        self,
        file: str | os.PathLike[str] | bytes,
        *,
        model_name: str,
        user: str,
        link: str | None = None,
        note: str | None = None,
        benchmark: str | None = None,
        protocol: str | None = None,
        trained_on: str | None = None,
        checkpoint_selection: str | None = None,
        params: float | str | None = None,
        code: str | None = None,
        paper: str | None = None,
    ) -> SubmissionResult:
        """Check, store and score one predictions file; raise ``SubmissionRejected`` saying why not.

        ``file`` is a path or the file's bytes; ``benchmark`` names the split it is scored on (None:
        the default). ``protocol`` (zero-shot, fine-tuned, other; default other),
        ``checkpoint_selection`` (validation, last, test, unknown; default unknown), ``trained_on``,
        ``params`` (a count such as 7e9 or "7B"), ``code`` and ``paper`` (http(s) links) are what
        the submitter declares; they are shown, not verified. A refusal (size, format, ids, sizes,
        rate limit, duplicate, metadata) is logged but does not count towards the rate limit.
        """
        now = self._clock()
        try:
            try:
                chosen = self.benchmark(benchmark).name
            except ValueError as error:
                raise SubmissionRejected(str(error)) from None
            declaration = clean_declaration(
                protocol=protocol,
                trained_on=trained_on,
                checkpoint_selection=checkpoint_selection,
                params=params,
                code=code,
                paper=paper,
            )
            submission, predictions = prepare(
                file,
                model_name=model_name,
                user=user,
                link=link,
                note=note,
                max_bytes=self.settings.max_upload_bytes,
                benchmark=chosen,
                declaration=declaration,
            )
        except SubmissionRejected as error:
            self._store.log_rejection(
                _clip(benchmark, MAX_USER),
                _clip(user, MAX_USER),
                _clip(model_name, MAX_MODEL_NAME),
                None,
                str(error),
                now,
            )
            raise
        try:
            submission_id = self._store.add_pending(submission, now=now, rate_limit=self._rate_limit)
        except SubmissionRejected as error:
            self._store.log_rejection(
                submission.benchmark, submission.user, submission.model_name, submission.sha256, str(error), now
            )
            raise
        self._score(submission_id, submission.benchmark, predictions, was_scored=False)
        self._push_backup([submission.sha256], message=f"submission #{submission_id} ({submission.benchmark})")
        return self._result(submission_id)

    def _score(self, submission_id: int, benchmark: str, predictions: dict[str, RLE], *, was_scored: bool) -> None:
        """Score one stored row; a file the ground truth refuses leaves nothing counted behind."""
        scorer = self._scorers[benchmark]
        try:
            scored = scorer.score(predictions)
        except SubmissionRejected as error:
            if was_scored:  # accepted once, against an older ground truth: keep the row, say why it stopped counting
                self._store.mark_failed(
                    submission_id, f"no longer matches the ground truth: {error}", now=self._clock()
                )
            else:
                self._store.discard(submission_id, str(error), now=self._clock())
            raise
        except Exception as error:
            self._store.mark_failed(submission_id, f"{type(error).__name__}: {error}", now=self._clock())
            raise
        self._store.mark_scored(
            submission_id, scored.summary, scored.counts, references_key=scorer.references_key, now=self._clock()
        )

    def _result(self, submission_id: int) -> SubmissionResult:
        row = self._store.get(submission_id)
        if row is None or row.scores is None:
            raise RuntimeError(f"submission #{submission_id} vanished while being scored")
        scores = row.scores
        return SubmissionResult(
            id=row.id,
            benchmark=row.benchmark,
            status=row.status,
            model_name=row.model_name,
            user=row.user,
            giou=scores["giou"],
            ciou=scores["ciou"],
            n=scores["n"],
            ci95=scores["ci95"],
            by_tag=scores["by_tag"],
            rank=tables.rank_of(self._entries(row.benchmark), row.id),
            file_sha256=row.file_sha256,
            submitted_at=row.submitted_at,
            **asdict(row.declaration),
        )

    # recovery and baselines

    def _score_left_over(self) -> list[str]:
        """Score rows a crash left pending, and rescore rows whose ground truth has changed.

        Rows of a benchmark no longer configured are left as they are, for when it comes back.
        """
        todo = []
        for name, scorer in self._scorers.items():
            todo += self._store.submissions("pending", benchmark=name) + [
                row
                for row in self._store.submissions("scored", benchmark=name)
                if row.references_key != scorer.references_key
            ]
        done: list[str] = []
        for row in tqdm(todo, desc="scoring left-over submissions", disable=len(todo) < 2):
            if self._rescore(row):
                done.append(row.file_sha256)
        return done

    def _rescore(self, row: StoredSubmission) -> bool:
        """Score one stored row from its raw file; failures are recorded on the row, not raised."""
        was_scored = row.status == "scored"
        try:
            content = self._store.read_blob(row.file_sha256)
        except FileNotFoundError:
            self._store.mark_failed(
                row.id, "the stored predictions file is missing: submit it again", now=self._clock()
            )
            return False
        try:
            self._score(row.id, row.benchmark, parse_predictions(content), was_scored=was_scored)
        except SubmissionRejected as error:  # _score has already recorded it
            logger.warning("submission #%d not scored: %s", row.id, error)
            return False
        except Exception:  # a scoring bug: recorded on the row by _score; keep the leaderboard up
            logger.exception("submission #%d failed to score", row.id)
            return False
        return True

    def _score_baselines(self, benchmark: Benchmark) -> None:
        """Score the benchmark's baseline files whose cached scores are missing or stale; forget removed ones."""
        folder = benchmark.resolved_baselines_dir()
        files = sorted(folder.glob("*.jsonl")) if folder is not None and folder.is_dir() else []
        scorer = self._scorers[benchmark.name]
        key = scorer.references_key
        for path in files:
            content = path.read_bytes()
            sha256 = hashlib.sha256(content).hexdigest()
            cached = self._store.baseline(benchmark.name, path.stem)
            if cached is not None and cached.file_sha256 == sha256 and cached.references_key == key:
                continue
            try:
                scored = scorer.score(parse_predictions(content))
            except SubmissionRejected as error:
                logger.warning("baseline %s of %s skipped: %s", path, benchmark.name, error)
                continue
            self._store.save_baseline(
                BaselineScore(benchmark.name, path.stem, sha256, key, scored.summary, self._clock()), scored.counts
            )
        self._store.keep_baselines(benchmark.name, {path.stem for path in files})

    def _push_backup(self, blob_hashes: Iterable[str], *, message: str) -> None:
        if self._backup is not None:
            self._backup.push(self._store, blob_hashes, message=message)

    # per-sample results

    def compare(
        self,
        a: int | str,
        b: int | str,
        *,
        benchmark: str | None = None,
        n_resamples: int = 1000,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Is A better than B? Paired gIoU and cIoU differences (A - B, fractions), overall and per tag.

        ``a`` and ``b`` are submission ids or ``"baseline:NAME"``. Returns ``giou_diff``,
        ``giou_ci95`` (95% paired-bootstrap interval), ``giou_p`` (two-sided sign-flip permutation
        p-value), the same for cIoU, and ``by_tag``; only aggregates, never a per-sample value.
        Raises ``Refused`` (a ``ValueError``) for unknown ids and for submissions on different
        benchmarks (or not on ``benchmark``, when named).
        """
        return self._per_sample.compare(a, b, benchmark=benchmark, n_resamples=n_resamples, seed=seed)

    def comparable(self, benchmark: str | None = None) -> list[tuple[str, str]]:
        """(label, id) pairs of a benchmark's scored submissions (newest first) and baselines, for a picker."""
        return self._per_sample.comparable(benchmark)

    def per_sample(self, submission: int | str, *, user: str) -> pd.DataFrame:
        """``user``'s own submission's per-sample IoU (columns ``id``, ``tags``, ``iou``).

        Raises ``Refused`` for another user's submission, a baseline, or a benchmark that sets
        ``private_per_sample`` (per-sample scores over many submissions would leak the ground truth).
        """
        return self._per_sample.download(submission, user=user)

    # tables

    def _entries(self, benchmark: str) -> list[tables.Entry]:
        entries = [
            tables.Entry(
                model=row.model_name,
                scores=row.scores,
                at=row.submitted_at,
                submitter=row.user,
                link=row.link,
                note=row.note,
                submission_id=row.id,
                declaration=row.declaration,
            )
            for row in self._store.submissions("scored", benchmark=benchmark)
            if row.scores is not None
        ]
        key = self._scorers[benchmark].references_key
        entries += [
            tables.Entry(
                model=b.name, scores=b.scores, at=b.scored_at, submitter=tables.BASELINE_SUBMITTER, baseline=True
            )
            for b in self._store.baselines(benchmark)
            if b.references_key == key
        ]
        return entries

    def _filtered(
        self,
        benchmark: str | None,
        protocols: Collection[str] | None,
        checkpoint_selections: Collection[str] | None,
    ) -> list[tables.Entry]:
        filters = tables.Filters.of(protocols=protocols, checkpoint_selections=checkpoint_selections)
        return filters.apply(self._entries(self.benchmark(benchmark).name))

    def table(
        self,
        show_all: bool = False,
        *,
        markdown: bool = True,
        benchmark: str | None = None,
        protocols: Collection[str] | None = None,
        checkpoint_selections: Collection[str] | None = None,
    ) -> pd.DataFrame:
        """A benchmark's ranked table (percent): best submission per model and submitter unless ``show_all``.

        With ``markdown`` the model column is a markdown link (for a UI) and a checkpoint chosen
        on the test split is flagged; without it the model name is plain text and the link has its
        own column (for a terminal or a file). ``protocols`` / ``checkpoint_selections`` keep only
        submissions that declared one of those (baselines stay, as reference points); ranks count
        the rows kept.
        """
        entries = self._filtered(benchmark, protocols, checkpoint_selections)
        if markdown:
            return tables.display_frame(entries, show_all=show_all)
        return tables.plain_frame(entries, show_all=show_all)

    def plot_data(
        self,
        *,
        benchmark: str | None = None,
        protocols: Collection[str] | None = None,
        checkpoint_selections: Collection[str] | None = None,
    ) -> pd.DataFrame:
        """gIoU and cIoU with 95% interval bounds per table row (percent), for a scatter plot."""
        return tables.plot_frame(self._filtered(benchmark, protocols, checkpoint_selections))

    def reported_table(self) -> pd.DataFrame:
        """Published ReasonSeg numbers, each labelled "reported, not verified here", with sources."""
        return reported_table()

    def to_csv(
        self,
        path: str | os.PathLike[str],
        show_all: bool = False,
        *,
        benchmark: str | None = None,
        protocols: Collection[str] | None = None,
        checkpoint_selections: Collection[str] | None = None,
    ) -> Path:
        """Write a benchmark's table as CSV (plain model names and a separate link column); return the path."""
        frame = self.table(
            show_all,
            markdown=False,
            benchmark=benchmark,
            protocols=protocols,
            checkpoint_selections=checkpoint_selections,
        )
        return _write_csv(frame, path)

    def reported_to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the published-results table as CSV; return the path."""
        return _write_csv(reported_table(), path)


def _write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(target, index=False)
    return target


def _clip(value: Any, limit: int) -> str | None:
    """A refused attempt's raw metadata, shortened for the log."""
    return None if value is None else str(value)[:limit]
