"""The app's own settings (model preset, examples, serving), read from flags and the environment.

Leaderboard settings (held-out data, database, upload and rate limits) belong to
``leaderboard.LeaderboardSettings``; the app only forwards the flags a user gave for them, so the
leaderboard's own environment variables keep working unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean: use 1 or 0")


def on_spaces() -> bool:
    """True inside a Hugging Face Space (the platform sets ``SPACE_ID``)."""
    return bool(os.environ.get("SPACE_ID"))


@dataclass(frozen=True)
class AppSettings:
    """What the app serves and how; every field has an environment variable (see ``from_env``)."""

    preset: str = "shapes"  # LLMSEG_PRESET: preset name or a saved model folder
    device: str | None = None  # LLMSEG_DEVICE: None picks cuda when available, else cpu
    preload: bool = True  # LLMSEG_PRELOAD: start loading the model in the background at launch
    examples_data: str = str(ROOT / "data" / "shapes-mini")  # LLMSEG_EXAMPLES: public split to draw examples from
    examples_split: str = "validation"  # LLMSEG_EXAMPLES_SPLIT
    num_examples: int = 8  # LLMSEG_NUM_EXAMPLES
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "llmseg-app")  # LLMSEG_APP_CACHE
    proposals_shown: int = 6  # top proposals drawn in the explanation gallery
    queue_size: int = 32  # LLMSEG_QUEUE_SIZE: requests waiting beyond this are refused
    segment_concurrency: int = 1  # LLMSEG_SEGMENT_CONCURRENCY: one model, one request at a time
    submit_concurrency: int = 2  # LLMSEG_SUBMIT_CONCURRENCY
    require_login: bool = field(default_factory=on_spaces)  # LLMSEG_REQUIRE_LOGIN: HF login identifies submitters
    server_name: str | None = None  # --host; None lets gradio read GRADIO_SERVER_NAME
    server_port: int | None = None  # --port; None lets gradio read GRADIO_SERVER_PORT
    leaderboard_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.preset:
            raise ValueError("the model preset is empty: give a preset name such as shapes, or a model folder")
        for name in ("num_examples", "proposals_shown", "queue_size", "segment_concurrency", "submit_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_env(cls, **overrides: Any) -> AppSettings:
        """Defaults, then ``LLMSEG_*`` environment variables, then explicit ``overrides``."""
        env: dict[str, Any] = {}
        text_vars = {
            "preset": "LLMSEG_PRESET",
            "device": "LLMSEG_DEVICE",
            "examples_data": "LLMSEG_EXAMPLES",
            "examples_split": "LLMSEG_EXAMPLES_SPLIT",
        }
        for key, name in text_vars.items():
            if os.environ.get(name):
                env[key] = os.environ[name]
        int_vars = {
            "num_examples": "LLMSEG_NUM_EXAMPLES",
            "queue_size": "LLMSEG_QUEUE_SIZE",
            "segment_concurrency": "LLMSEG_SEGMENT_CONCURRENCY",
            "submit_concurrency": "LLMSEG_SUBMIT_CONCURRENCY",
        }
        for key, name in int_vars.items():
            if os.environ.get(name):
                try:
                    env[key] = int(os.environ[name])
                except ValueError:
                    raise ValueError(f"{name}={os.environ[name]!r} is not an integer") from None
        if os.environ.get("LLMSEG_APP_CACHE"):
            env["cache_dir"] = Path(os.environ["LLMSEG_APP_CACHE"])
        env["preload"] = _env_bool("LLMSEG_PRELOAD", cls.preload)
        env["require_login"] = _env_bool("LLMSEG_REQUIRE_LOGIN", on_spaces())
        env.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**env)

    def replace(self, **changes: Any) -> AppSettings:
        return dataclasses.replace(self, **changes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="LLM-Seg demo, leaderboard and submissions. Every flag also has an environment variable.",
    )
    model = parser.add_argument_group("model (demo tab)")
    model.add_argument("--preset", help="model preset name or saved model folder [LLMSEG_PRESET, default shapes]")
    model.add_argument("--device", help="torch device [LLMSEG_DEVICE, default cuda if available else cpu]")
    model.add_argument(
        "--no-preload",
        dest="preload",
        action="store_false",
        default=None,
        help="load the model on the first question instead of at launch [LLMSEG_PRELOAD=0]",
    )
    model.add_argument("--examples", dest="examples_data", help="public dataset for the examples [LLMSEG_EXAMPLES]")
    model.add_argument("--examples-split", help="split of --examples [LLMSEG_EXAMPLES_SPLIT, default validation]")
    board = parser.add_argument_group("leaderboard (defaults come from the leaderboard's own environment variables)")
    board.add_argument("--data", help="held-out ground-truth dataset: folder or Hub id")
    board.add_argument("--split", help="split of --data that submissions are scored on")
    board.add_argument(
        "--benchmarks",
        dest="benchmarks_file",
        help="JSON or YAML file listing several benchmarks, replacing --data/--split [LLMSEG_LEADERBOARD_BENCHMARKS]",
    )
    board.add_argument("--db", dest="db_path", help="SQLite database file")
    board.add_argument("--max-upload-mb", type=float, help="largest accepted predictions file, in MB")
    board.add_argument("--rate-limit", dest="rate_limit_per_day", type=int, help="scored submissions per user per 24 h")
    serve = parser.add_argument_group("serving")
    serve.add_argument("--host", dest="server_name", help="interface to bind [GRADIO_SERVER_NAME, default 127.0.0.1]")
    serve.add_argument("--port", dest="server_port", type=int, help="port [GRADIO_SERVER_PORT, default 7860]")
    return parser


LEADERBOARD_FLAGS = ("data", "split", "benchmarks_file", "db_path", "max_upload_mb", "rate_limit_per_day")


def settings_from_args(argv: list[str] | None = None) -> AppSettings:
    """Parse command-line flags into settings; flags win over environment variables."""
    args = vars(build_parser().parse_args(argv))
    if args.get("benchmarks_file") and (args.get("data") or args.get("split")):
        raise ValueError("give --benchmarks or --data/--split, not both: the file gives each benchmark's data")
    board = {key: args.pop(key) for key in LEADERBOARD_FLAGS if args.get(key) is not None}
    for key in LEADERBOARD_FLAGS:
        args.pop(key, None)
    return AppSettings.from_env(leaderboard_overrides=board, **args)
