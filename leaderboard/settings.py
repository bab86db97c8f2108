"""Leaderboard settings: one typed, validated config, read from keyword arguments or the environment.

Each field has an environment variable so a Space is configured from its settings page without
code; keyword overrides win over the environment, which wins over the defaults.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .benchmarks import DEFAULT_BENCHMARK, NAME_PATTERN, Benchmark, load_benchmarks

DEFAULT_DB_PATH = Path("leaderboard-data/leaderboard.sqlite")
DEFAULT_DATA = "data/shapes-mini-heldout"

# field name -> environment variable
ENVIRONMENT = {
    "db_path": "LLMSEG_LEADERBOARD_DB",
    "data": "LLMSEG_LEADERBOARD_DATA",
    "split": "LLMSEG_LEADERBOARD_SPLIT",
    "hf_token": "HF_TOKEN",
    "max_upload_mb": "LLMSEG_LEADERBOARD_MAX_UPLOAD_MB",
    "rate_limit_per_day": "LLMSEG_LEADERBOARD_RATE_LIMIT",
    "backup_repo": "LLMSEG_LEADERBOARD_BACKUP_REPO",
    "baselines_dir": "LLMSEG_LEADERBOARD_BASELINES",
    "benchmarks_file": "LLMSEG_LEADERBOARD_BENCHMARKS",
}


@dataclass(frozen=True)
class LeaderboardSettings:
    """Where the leaderboard keeps its data, which split it scores against, and its limits.

    Attributes:
        db_path: the SQLite file; raw submissions are kept in ``submissions/`` beside it.
        data: a local dataset folder or a Hub dataset id holding the held-out ground truth.
        split: the split of ``data`` that submissions are scored against.
        hf_token: token for a private Hub dataset and for the backup repo (``HF_TOKEN``).
        max_upload_mb: largest predictions file accepted, in MiB.
        rate_limit_per_day: scored submissions one user may make in any 24 hours.
        backup_repo: a Hub dataset repo id to mirror the database and raw files to (needs
            ``hf_token``); None disables the backup.
        baselines_dir: folder of baseline prediction files ``<name>.jsonl``; None means
            ``<data>/baselines`` when ``data`` is a local folder, else no baselines.
        benchmarks_file: a JSON or YAML file listing several benchmarks (see
            ``leaderboard.benchmarks``); when given, ``data``, ``split`` and ``baselines_dir`` are
            not used. None: one benchmark, ``data``'s ``split``.
    """

    db_path: Path = DEFAULT_DB_PATH
    data: str = DEFAULT_DATA
    split: str = "test"
    hf_token: str | None = field(default=None, repr=False)
    max_upload_mb: float = 20.0
    rate_limit_per_day: int = 5
    backup_repo: str | None = None
    baselines_dir: Path | None = None
    benchmarks_file: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "db_path", Path(self.db_path))
        object.__setattr__(self, "data", str(self.data))
        for name in ("baselines_dir", "benchmarks_file"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if not self.data.strip():
            raise ValueError("data must name a dataset folder or a Hub dataset id")
        if not self.split.strip():
            raise ValueError("split must name a split of the held-out dataset, e.g. 'test'")
        if not self.max_upload_mb > 0:
            raise ValueError(f"max_upload_mb must be positive, got {self.max_upload_mb}")
        if isinstance(self.rate_limit_per_day, bool) or self.rate_limit_per_day < 1:
            raise ValueError(f"rate_limit_per_day must be a positive integer, got {self.rate_limit_per_day}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def ground_truth_dir(self) -> Path:
        """Where the ground-truth cache lives: one RLE file per split fingerprint, beside the database."""
        return self.db_path.parent / "ground-truth"

    @property
    def blobs_dir(self) -> Path:
        """Raw submitted files, content-addressed by sha256, kept beside the database."""
        return self.db_path.parent / "submissions"

    def resolved_baselines_dir(self) -> Path | None:
        """The baseline folder to score, or None when there is none."""
        if self.baselines_dir is not None:
            return self.baselines_dir
        local = Path(self.data)
        return local / "baselines" if local.is_dir() else None

    def benchmarks(self) -> tuple[Benchmark, ...]:
        """The benchmarks to score, the default first: the file's, or the one ``data``/``split`` pair."""
        if self.benchmarks_file is not None:
            return load_benchmarks(self.benchmarks_file)
        return (
            Benchmark(
                name=implicit_benchmark_name(self.data),
                data=self.data,
                split=self.split,
                baselines_dir=self.baselines_dir,
            ),
        )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> LeaderboardSettings:
        """Build settings from ``LLMSEG_LEADERBOARD_*`` variables (and ``HF_TOKEN``), then ``overrides``.

        An override of None leaves the environment's (or default) value in place, so a CLI can
        pass its optional flags straight through.
        """
        environ = os.environ if environ is None else environ
        unknown = sorted(set(overrides) - set(ENVIRONMENT))
        if unknown:
            raise ValueError(f"unknown leaderboard setting(s) {', '.join(unknown)}; known: {', '.join(ENVIRONMENT)}")
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, variable in ENVIRONMENT.items():
            raw = environ.get(variable)
            if raw is not None and raw.strip():
                values[name] = _parse(raw.strip(), kinds[name], variable)
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)


def _parse(raw: str, kind: str, variable: str) -> Any:
    """Convert an environment string to the field's type, naming the variable when it is wrong."""
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise ValueError(f"{variable}={raw!r} is not a number") from None
    return raw


def implicit_benchmark_name(data: str) -> str:
    """The name of the one benchmark a leaderboard without a benchmarks file scores.

    ``shapes`` for the default split (the name the shipped benchmarks file gives it, so a database
    keeps its rows when that file is added), else the data folder's or Hub id's last part.
    """
    if Path(data) == Path(DEFAULT_DATA) or Path(data).resolve() == Path(DEFAULT_DATA).resolve():
        return DEFAULT_BENCHMARK
    slug = re.sub(r"[^a-z0-9._-]+", "-", Path(data.rstrip("/\\")).name.lower()).strip("-._")[:64]
    return slug if NAME_PATTERN.fullmatch(slug) else "default"
