"""SQLite storage of submissions, rejected attempts, cached baseline scores and the per-sample counts
behind them, plus the raw files.

One database holds every benchmark: each row names its benchmark. The schema is versioned
(``PRAGMA user_version``); an older database is migrated in place, in one transaction, on open.
One connection per operation (SQLite connections are not shared between threads), WAL mode so
readers never wait for the writer, and ``BEGIN IMMEDIATE`` around every check-then-write so
concurrent submitters cannot both pass the rate limit. Raw files are content-addressed
(``submissions/<sha256>.jsonl`` beside the database) and written before their row commits, so a
pending row always has its file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .limits import RateLimit, check_duplicate
from .significance import SampleCounts
from .submission import DEFAULT_CHECKPOINT_SELECTION, DEFAULT_PROTOCOL, Declaration, Submission

SCHEMA_VERSION = 2

# Version 1: one benchmark, no declared protocol. Kept as written then, so migrations start from it.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    model_name TEXT NOT NULL,
    link TEXT,
    note TEXT,
    file_sha256 TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'scored', 'failed')),
    error TEXT,
    scores TEXT,
    scored_at REAL,
    references_key TEXT
);
CREATE INDEX IF NOT EXISTS submissions_by_user ON submissions (user, submitted_at);
CREATE INDEX IF NOT EXISTS submissions_by_status ON submissions (status);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT,
    model_name TEXT,
    file_sha256 TEXT,
    attempted_at REAL NOT NULL,
    error TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS baselines (
    name TEXT PRIMARY KEY,
    file_sha256 TEXT NOT NULL,
    references_key TEXT NOT NULL,
    scores TEXT NOT NULL,
    scored_at REAL NOT NULL
);
"""

# Version 2: every row belongs to a benchmark; submissions carry the declared protocol.
SUBMISSIONS_V2 = """
CREATE TABLE {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    benchmark TEXT NOT NULL,
    user TEXT NOT NULL,
    model_name TEXT NOT NULL,
    link TEXT,
    note TEXT,
    protocol TEXT NOT NULL,
    trained_on TEXT,
    checkpoint_selection TEXT NOT NULL,
    params REAL,
    code TEXT,
    paper TEXT,
    file_sha256 TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'scored', 'failed')),
    error TEXT,
    scores TEXT,
    scored_at REAL,
    references_key TEXT
)
"""
BASELINES_V2 = """
CREATE TABLE {table} (
    benchmark TEXT NOT NULL,
    name TEXT NOT NULL,
    file_sha256 TEXT NOT NULL,
    references_key TEXT NOT NULL,
    scores TEXT NOT NULL,
    scored_at REAL NOT NULL,
    PRIMARY KEY (benchmark, name)
)
"""
# Per-sample I and U of every scored file (compressed little-endian int64 arrays in the split's
# order), for paired comparisons and a submitter's own download. Added without a version bump:
# older databases simply lack the tables until opened, and their rows are backfilled lazily.
PER_SAMPLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS per_sample (
    submission_id INTEGER PRIMARY KEY,
    references_key TEXT NOT NULL,
    intersection BLOB NOT NULL,
    union_area BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS baseline_per_sample (
    benchmark TEXT NOT NULL,
    name TEXT NOT NULL,
    references_key TEXT NOT NULL,
    intersection BLOB NOT NULL,
    union_area BLOB NOT NULL,
    PRIMARY KEY (benchmark, name)
);
"""
_V1_SUBMISSION_COLUMNS = (
    "id, user, model_name, link, note, file_sha256, submitted_at, status, error, scores, scored_at, references_key"
)

COUNTED = ("pending", "scored")


@dataclass(frozen=True)
class StoredSubmission:
    """One row of ``submissions``; ``scores`` is the evaluation summary once scored."""

    id: int
    benchmark: str
    user: str
    model_name: str
    link: str | None
    note: str | None
    protocol: str
    trained_on: str | None
    checkpoint_selection: str
    params: float | None
    code: str | None
    paper: str | None
    file_sha256: str
    submitted_at: float
    status: str
    error: str | None
    scores: dict[str, Any] | None
    scored_at: float | None
    references_key: str | None

    @property
    def declaration(self) -> Declaration:
        return Declaration(
            protocol=self.protocol,
            trained_on=self.trained_on,
            checkpoint_selection=self.checkpoint_selection,
            params=self.params,
            code=self.code,
            paper=self.paper,
        )


@dataclass(frozen=True)
class BaselineScore:
    """A baseline file's cached scores, valid while its hash and the ground truth are unchanged."""

    benchmark: str
    name: str
    file_sha256: str
    references_key: str
    scores: dict[str, Any]
    scored_at: float


class Store:
    """The leaderboard's database and raw-file folder."""

    def __init__(self, db_path: Path, blobs_dir: Path, *, legacy_benchmark: str) -> None:
        """Open (creating or migrating) the database; rows of a version-1 database go to ``legacy_benchmark``."""
        self.db_path = Path(db_path)
        self.blobs_dir = Path(blobs_dir)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as connection:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ValueError(
                    f"{self.db_path} was written by a newer leaderboard (schema {version} > {SCHEMA_VERSION}): "
                    "update the code or point LLMSEG_LEADERBOARD_DB elsewhere"
                )
            connection.execute("PRAGMA journal_mode=WAL")
        if version < SCHEMA_VERSION:
            self._migrate(version, legacy_benchmark)
        with closing(self._connect()) as connection:
            connection.executescript(PER_SAMPLE_SCHEMA)

    def _migrate(self, version: int, legacy_benchmark: str) -> None:
        """Bring the schema to ``SCHEMA_VERSION`` in one transaction: all of it happens, or none."""
        with self._transaction() as connection:
            version = connection.execute("PRAGMA user_version").fetchone()[0]  # another process may have done it
            if version < 1:
                for statement in SCHEMA_V1.split(";"):
                    if statement.strip():
                        connection.execute(statement)
            if version < 2:
                _to_v2(connection, legacy_benchmark)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        except sqlite3.OperationalError as error:
            raise ValueError(f"cannot open the leaderboard database {self.db_path}: {error}") from None
        connection.row_factory = sqlite3.Row
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front, so its reads stay valid."""
        with closing(self._connect()) as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with closing(self._connect()) as connection:
            return connection.execute(sql, parameters).fetchall()

    # submissions

    def add_pending(self, submission: Submission, *, now: float, rate_limit: RateLimit) -> int:
        """Check duplicates and the rate limit (per user and benchmark), keep the raw file, insert a
        pending row; return its id."""
        placeholders = ", ".join("?" for _ in COUNTED)
        with self._transaction() as connection:
            duplicate = connection.execute(
                f"SELECT id, model_name FROM submissions WHERE benchmark = ? AND user = ? AND file_sha256 = ? "
                f"AND status IN ({placeholders}) ORDER BY id LIMIT 1",
                (submission.benchmark, submission.user, submission.sha256, *COUNTED),
            ).fetchone()
            check_duplicate(duplicate["id"] if duplicate else None, duplicate["model_name"] if duplicate else None)
            recent, oldest = connection.execute(
                f"SELECT COUNT(*), MIN(submitted_at) FROM submissions WHERE benchmark = ? AND user = ? "
                f"AND submitted_at > ? AND status IN ({placeholders})",
                (submission.benchmark, submission.user, now - rate_limit.window_s, *COUNTED),
            ).fetchone()
            rate_limit.check(recent=recent, oldest_recent=oldest)
            self._write_blob(submission.sha256, submission.content)
            declared = submission.declaration
            inserted = connection.execute(
                "INSERT INTO submissions (benchmark, user, model_name, link, note, protocol, trained_on, "
                "checkpoint_selection, params, code, paper, file_sha256, submitted_at, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending') RETURNING id",
                (
                    submission.benchmark,
                    submission.user,
                    submission.model_name,
                    submission.link,
                    submission.note,
                    declared.protocol,
                    declared.trained_on,
                    declared.checkpoint_selection,
                    declared.params,
                    declared.code,
                    declared.paper,
                    submission.sha256,
                    now,
                ),
            ).fetchall()  # fetch everything so the statement finishes before COMMIT
        return int(inserted[0]["id"])

    def mark_scored(
        self,
        submission_id: int,
        scores: dict[str, Any],
        counts: SampleCounts,
        *,
        references_key: str,
        now: float,
    ) -> None:
        """Store the scores and per-sample counts of a pending (or re-scored) row, together."""
        with self._transaction() as connection:
            connection.execute(
                "UPDATE submissions SET status = 'scored', error = NULL, scores = ?, scored_at = ?, "
                "references_key = ? WHERE id = ?",
                (json.dumps(scores, sort_keys=True), now, references_key, submission_id),
            )
            self._save_per_sample(connection, submission_id, counts, references_key)

    def save_per_sample(self, submission_id: int, counts: SampleCounts, *, references_key: str) -> None:
        """Store a scored row's per-sample counts (a lazy backfill for rows scored before they were kept)."""
        with self._transaction() as connection:
            self._save_per_sample(connection, submission_id, counts, references_key)

    @staticmethod
    def _save_per_sample(
        connection: sqlite3.Connection, submission_id: int, counts: SampleCounts, references_key: str
    ) -> None:
        connection.execute(
            "INSERT OR REPLACE INTO per_sample (submission_id, references_key, intersection, union_area) "
            "VALUES (?, ?, ?, ?)",
            (submission_id, references_key, *_pack(counts)),
        )

    def per_sample(self, submission_id: int) -> tuple[str, SampleCounts] | None:
        """A submission's per-sample counts and the ground-truth fingerprint they were computed on."""
        rows = self._read("SELECT * FROM per_sample WHERE submission_id = ?", (submission_id,))
        return (rows[0]["references_key"], _unpack(rows[0])) if rows else None

    def mark_failed(self, submission_id: int, error: str, *, now: float) -> None:
        """Record that scoring crashed on a bug, not on the file; the row stops counting for the user."""
        with self._transaction() as connection:
            connection.execute(
                "UPDATE submissions SET status = 'failed', error = ?, scored_at = ? WHERE id = ?",
                (error, now, submission_id),
            )

    def discard(self, submission_id: int, error: str, *, now: float) -> None:
        """Turn a stored row whose file proved invalid into a logged rejection: nothing partial stays."""
        with self._transaction() as connection:
            row = connection.execute("SELECT * FROM submissions WHERE id = ?", (submission_id,)).fetchone()
            if row is None:
                return
            connection.execute("DELETE FROM submissions WHERE id = ?", (submission_id,))
            self._log_rejection(
                connection, row["benchmark"], row["user"], row["model_name"], row["file_sha256"], error, now
            )
            still_used = connection.execute(
                "SELECT 1 FROM submissions WHERE file_sha256 = ? LIMIT 1", (row["file_sha256"],)
            ).fetchone()
            if still_used is None:
                self.blob_path(row["file_sha256"]).unlink(missing_ok=True)

    def log_rejection(
        self,
        benchmark: str | None,
        user: str | None,
        model_name: str | None,
        sha256: str | None,
        error: str,
        now: float,
    ) -> None:
        """Record a refused attempt (for the maintainer); it never counts against the user."""
        with self._transaction() as connection:
            self._log_rejection(connection, benchmark, user, model_name, sha256, error, now)

    @staticmethod
    def _log_rejection(
        connection: sqlite3.Connection,
        benchmark: str | None,
        user: str | None,
        model_name: str | None,
        sha256: str | None,
        error: str,
        now: float,
    ) -> None:
        connection.execute(
            "INSERT INTO rejections (benchmark, user, model_name, file_sha256, attempted_at, error) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (benchmark, user, model_name, sha256, now, error),
        )

    def get(self, submission_id: int) -> StoredSubmission | None:
        rows = self._read("SELECT * FROM submissions WHERE id = ?", (submission_id,))
        return _submission(rows[0]) if rows else None

    def submissions(self, status: str | None = None, *, benchmark: str | None = None) -> list[StoredSubmission]:
        """All rows (or those with ``status``, and of ``benchmark``), oldest first."""
        conditions = [(column, value) for column, value in (("status", status), ("benchmark", benchmark)) if value]
        where = " AND ".join(f"{column} = ?" for column, _ in conditions)
        rows = self._read(
            f"SELECT * FROM submissions {'WHERE ' + where if where else ''} ORDER BY id",
            tuple(value for _, value in conditions),
        )
        return [_submission(row) for row in rows]

    def rejections(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._read("SELECT * FROM rejections ORDER BY id")]

    # raw files

    def blob_path(self, sha256: str) -> Path:
        return self.blobs_dir / f"{sha256}.jsonl"

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    def _write_blob(self, sha256: str, content: bytes) -> None:
        """Write atomically (temp file + rename) so a crash never leaves a half file under its hash."""
        path = self.blob_path(sha256)
        if path.exists():
            return
        descriptor, temporary = tempfile.mkstemp(dir=self.blobs_dir, prefix=".incoming-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    # baselines

    def baseline(self, benchmark: str, name: str) -> BaselineScore | None:
        rows = self._read("SELECT * FROM baselines WHERE benchmark = ? AND name = ?", (benchmark, name))
        return _baseline(rows[0]) if rows else None

    def baselines(self, benchmark: str) -> list[BaselineScore]:
        rows = self._read("SELECT * FROM baselines WHERE benchmark = ? ORDER BY name", (benchmark,))
        return [_baseline(row) for row in rows]

    def save_baseline(self, score: BaselineScore, counts: SampleCounts) -> None:
        """Cache a baseline's scores and its per-sample counts, together."""
        with self._transaction() as connection:
            self._save_baseline_per_sample(connection, score.benchmark, score.name, counts, score.references_key)
            connection.execute(
                "INSERT OR REPLACE INTO baselines (benchmark, name, file_sha256, references_key, scores, scored_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    score.benchmark,
                    score.name,
                    score.file_sha256,
                    score.references_key,
                    json.dumps(score.scores, sort_keys=True),
                    score.scored_at,
                ),
            )

    def keep_baselines(self, benchmark: str, names: set[str]) -> None:
        """Drop the benchmark's cached baselines whose file is gone."""
        with self._transaction() as connection:
            for row in connection.execute("SELECT name FROM baselines WHERE benchmark = ?", (benchmark,)).fetchall():
                if row["name"] not in names:
                    for table in ("baselines", "baseline_per_sample"):
                        connection.execute(
                            f"DELETE FROM {table} WHERE benchmark = ? AND name = ?", (benchmark, row["name"])
                        )

    def save_baseline_per_sample(self, benchmark: str, name: str, counts: SampleCounts, *, references_key: str) -> None:
        """Store a cached baseline's per-sample counts (a lazy backfill for caches older than them)."""
        with self._transaction() as connection:
            self._save_baseline_per_sample(connection, benchmark, name, counts, references_key)

    @staticmethod
    def _save_baseline_per_sample(
        connection: sqlite3.Connection, benchmark: str, name: str, counts: SampleCounts, references_key: str
    ) -> None:
        connection.execute(
            "INSERT OR REPLACE INTO baseline_per_sample (benchmark, name, references_key, intersection, union_area) "
            "VALUES (?, ?, ?, ?, ?)",
            (benchmark, name, references_key, *_pack(counts)),
        )

    def baseline_per_sample(self, benchmark: str, name: str) -> tuple[str, SampleCounts] | None:
        """A baseline's per-sample counts and the ground-truth fingerprint they were computed on."""
        rows = self._read("SELECT * FROM baseline_per_sample WHERE benchmark = ? AND name = ?", (benchmark, name))
        return (rows[0]["references_key"], _unpack(rows[0])) if rows else None

    # backup

    def snapshot(self, path: Path) -> None:
        """Copy a consistent image of the database (WAL included) to ``path``, for backups."""
        with closing(self._connect()) as source, closing(sqlite3.connect(path)) as target:
            source.backup(target)


def _to_v2(connection: sqlite3.Connection, legacy_benchmark: str) -> None:
    """Version 1 to 2: every existing row goes to ``legacy_benchmark``; old submissions declared
    nothing, so they get protocol ``other`` and checkpoint selection ``unknown``.

    SQLite cannot change a primary key or add NOT NULL columns without defaults, so ``submissions``
    and ``baselines`` are rebuilt (ids and the id sequence kept); ``rejections`` gains a column.
    """
    (old_sequence,) = connection.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'submissions'"
    ).fetchone()
    connection.execute(SUBMISSIONS_V2.format(table="submissions_v2"))
    connection.execute(
        f"INSERT INTO submissions_v2 ({_V1_SUBMISSION_COLUMNS}, benchmark, protocol, checkpoint_selection) "
        f"SELECT {_V1_SUBMISSION_COLUMNS}, ?, ?, ? FROM submissions ORDER BY id",
        (legacy_benchmark, DEFAULT_PROTOCOL, DEFAULT_CHECKPOINT_SELECTION),
    )
    connection.execute("DROP TABLE submissions")
    connection.execute("ALTER TABLE submissions_v2 RENAME TO submissions")
    (new_sequence,) = connection.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'submissions'"
    ).fetchone()
    connection.execute("DELETE FROM sqlite_sequence WHERE name IN ('submissions', 'submissions_v2')")
    connection.execute(
        "INSERT INTO sqlite_sequence (name, seq) VALUES ('submissions', ?)", (max(old_sequence, new_sequence),)
    )
    connection.execute("CREATE INDEX submissions_by_user ON submissions (benchmark, user, submitted_at)")
    connection.execute("CREATE INDEX submissions_by_status ON submissions (status)")

    connection.execute("ALTER TABLE rejections ADD COLUMN benchmark TEXT")
    connection.execute("UPDATE rejections SET benchmark = ?", (legacy_benchmark,))

    connection.execute(BASELINES_V2.format(table="baselines_v2"))
    connection.execute(
        "INSERT INTO baselines_v2 (benchmark, name, file_sha256, references_key, scores, scored_at) "
        "SELECT ?, name, file_sha256, references_key, scores, scored_at FROM baselines",
        (legacy_benchmark,),
    )
    connection.execute("DROP TABLE baselines")
    connection.execute("ALTER TABLE baselines_v2 RENAME TO baselines")


def _pack(counts: SampleCounts) -> tuple[bytes, bytes]:
    """The two arrays as compressed little-endian int64 bytes (areas compress well)."""
    intersection, union = (np.ascontiguousarray(a, dtype="<i8").tobytes() for a in (counts.intersection, counts.union))
    return zlib.compress(intersection, 1), zlib.compress(union, 1)


def _unpack(row: sqlite3.Row) -> SampleCounts:
    intersection, union = (np.frombuffer(zlib.decompress(row[c]), dtype="<i8") for c in ("intersection", "union_area"))
    return SampleCounts(intersection, union)


def _submission(row: sqlite3.Row) -> StoredSubmission:
    values = dict(row)
    values["scores"] = json.loads(values["scores"]) if values["scores"] else None
    return StoredSubmission(**values)


def _baseline(row: sqlite3.Row) -> BaselineScore:
    values = dict(row)
    values["scores"] = json.loads(values["scores"])
    return BaselineScore(**values)
