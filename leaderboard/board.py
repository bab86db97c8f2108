"""The leaderboard: accepts submissions, scores them, and serves the ranked tables.

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
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from eval.rle import RLE

from . import table as tables
from .backup import HubBackup
from .limits import RateLimit
from .reported import reported_table
from .scoring import Scorer
from .settings import LeaderboardSettings
from .store import BaselineScore, Store, StoredSubmission
from .submission import MAX_MODEL_NAME, MAX_USER, SubmissionRejected, parse_predictions, prepare

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmissionResult:
    """A scored submission: its id, scores (fractions in [0, 1]) and rank among all submissions."""

    id: int
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Leaderboard:
    """Submissions scored against a held-out split, with ranked tables and published numbers.

    Opening it creates the database if needed (or restores it from the Hub backup), decodes the
    ground truth once, scores rows left pending by a crash (and rows scored against a ground
    truth that has since changed), and scores the baseline files whose cache is stale.
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
        self._store = Store(self.settings.db_path, self.settings.blobs_dir)
        self._scorer = Scorer(self.settings.data, self.settings.split, token=self.settings.hf_token)
        self._rate_limit = RateLimit(self.settings.rate_limit_per_day)
        rescored = self._score_left_over()
        self._score_baselines()
        if rescored:
            self._push_backup(rescored, message=f"rescored {len(rescored)} submission(s) on start")

    # submitting

    def submit(
        self,
        file: str | os.PathLike[str] | bytes,
        *,
        model_name: str,
        user: str,
        link: str | None = None,
        note: str | None = None,
    ) -> SubmissionResult:
        """Check, store and score one predictions file; raise ``SubmissionRejected`` saying why not.

        ``file`` is a path or the file's bytes. A refusal (size, format, ids, sizes, rate limit,
        duplicate, metadata) is logged but does not count towards the rate limit.
        """
        now = self._clock()
        try:
            submission, predictions = prepare(
                file,
                model_name=model_name,
                user=user,
                link=link,
                note=note,
                max_bytes=self.settings.max_upload_bytes,
            )
        except SubmissionRejected as error:
            self._store.log_rejection(_clip(user, MAX_USER), _clip(model_name, MAX_MODEL_NAME), None, str(error), now)
            raise
        try:
            submission_id = self._store.add_pending(submission, now=now, rate_limit=self._rate_limit)
        except SubmissionRejected as error:
            self._store.log_rejection(submission.user, submission.model_name, submission.sha256, str(error), now)
            raise
        self._score(submission_id, predictions, was_scored=False)
        self._push_backup([submission.sha256], message=f"submission #{submission_id}")
        return self._result(submission_id)

    def _score(self, submission_id: int, predictions: dict[str, RLE], *, was_scored: bool) -> None:
        """Score one stored row; a file the ground truth refuses leaves nothing counted behind."""
        try:
            scores = self._scorer.score(predictions)
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
        self._store.mark_scored(submission_id, scores, references_key=self._scorer.references_key, now=self._clock())

    def _result(self, submission_id: int) -> SubmissionResult:
        row = self._store.get(submission_id)
        if row is None or row.scores is None:
            raise RuntimeError(f"submission #{submission_id} vanished while being scored")
        scores = row.scores
        return SubmissionResult(
            id=row.id,
            status=row.status,
            model_name=row.model_name,
            user=row.user,
            giou=scores["giou"],
            ciou=scores["ciou"],
            n=scores["n"],
            ci95=scores["ci95"],
            by_tag=scores["by_tag"],
            rank=tables.rank_of(self._entries(), row.id),
            file_sha256=row.file_sha256,
            submitted_at=row.submitted_at,
        )

    # recovery and baselines

    def _score_left_over(self) -> list[str]:
        """Score rows a crash left pending, and rescore rows whose ground truth has changed."""
        key = self._scorer.references_key
        todo = self._store.submissions("pending") + [
            row for row in self._store.submissions("scored") if row.references_key != key
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
            self._score(row.id, parse_predictions(content), was_scored=was_scored)
        except SubmissionRejected as error:  # _score has already recorded it
            logger.warning("submission #%d not scored: %s", row.id, error)
            return False
        except Exception:  # a scoring bug: recorded on the row by _score; keep the leaderboard up
            logger.exception("submission #%d failed to score", row.id)
            return False
        return True

    def _score_baselines(self) -> None:
        """Score the baseline files whose cached scores are missing or stale; forget removed ones."""
        folder = self.settings.resolved_baselines_dir()
        files = sorted(folder.glob("*.jsonl")) if folder is not None and folder.is_dir() else []
        key = self._scorer.references_key
        for path in files:
            content = path.read_bytes()
            sha256 = hashlib.sha256(content).hexdigest()
            cached = self._store.baseline(path.stem)
            if cached is not None and cached.file_sha256 == sha256 and cached.references_key == key:
                continue
            try:
                scores = self._scorer.score(parse_predictions(content))
            except SubmissionRejected as error:
                logger.warning("baseline %s skipped: %s", path, error)
                continue
            self._store.save_baseline(BaselineScore(path.stem, sha256, key, scores, self._clock()))
        self._store.keep_baselines({path.stem for path in files})

    def _push_backup(self, blob_hashes: Iterable[str], *, message: str) -> None:
        if self._backup is not None:
            self._backup.push(self._store, blob_hashes, message=message)

    # tables

    def _entries(self) -> list[tables.Entry]:
        entries = [
            tables.Entry(
                model=row.model_name,
                scores=row.scores,
                at=row.submitted_at,
                submitter=row.user,
                link=row.link,
                note=row.note,
                submission_id=row.id,
            )
            for row in self._store.submissions("scored")
            if row.scores is not None
        ]
        key = self._scorer.references_key
        entries += [
            tables.Entry(
                model=b.name, scores=b.scores, at=b.scored_at, submitter=tables.BASELINE_SUBMITTER, baseline=True
            )
            for b in self._store.baselines()
            if b.references_key == key
        ]
        return entries

    def table(self, show_all: bool = False, *, markdown: bool = True) -> pd.DataFrame:
        """The ranked table (percent): best submission per model and submitter unless ``show_all``.

        With ``markdown`` the model column is a markdown link (for a UI); without it the model
        name is plain text and the link has its own column (for a terminal or a file).
        """
        if markdown:
            return tables.display_frame(self._entries(), show_all=show_all)
        return tables.plain_frame(self._entries(), show_all=show_all)

    def plot_data(self) -> pd.DataFrame:
        """gIoU and cIoU with 95% interval bounds per table row (percent), for a scatter plot."""
        return tables.plot_frame(self._entries())

    def reported_table(self) -> pd.DataFrame:
        """Published ReasonSeg numbers, each labelled "reported, not verified here", with sources."""
        return reported_table()

    def to_csv(self, path: str | os.PathLike[str], show_all: bool = False) -> Path:
        """Write the table as CSV (plain model names and a separate link column); return the path."""
        return _write_csv(self.table(show_all, markdown=False), path)

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
