"""The evaluation contract and the judge: predictions format, metrics and ``evaluate``.

The bottom layer of the project: it imports neither torch nor anything from ``llmseg`` or
``leaderboard``, so a leaderboard-only Space starts fast. ``load_split`` (which needs
``datasets``, slow to import) is imported on first use (PEP 562), so ``python -m eval`` on a
local folder never pays for it.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any


def _running_as_cli() -> bool:
    """True while the interpreter imports this package to run ``python -m eval`` (argv[0] is "-m" until then)."""
    argv = getattr(sys, "orig_argv", [])
    return sys.argv[:1] == ["-m"] and "-m" in argv and argv[argv.index("-m") + 1 : argv.index("-m") + 2] == ["eval"]


if _running_as_cli():
    # The judge does no linear algebra, and OpenBLAS starts (and spins) a worker per core when NumPy
    # is imported: 50-80 ms of a warm run's start-up on a 2-core machine. A value the user set wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from eval.evaluate import References, evaluate  # noqa: E402 (after the OpenBLAS setting)
from eval.predictions import PredictionsError, read_predictions, write_predictions  # noqa: E402
from eval.report import Report  # noqa: E402

if TYPE_CHECKING:
    from eval.contract import load_split

__all__ = [
    "PredictionsError",
    "References",
    "Report",
    "evaluate",
    "load_split",
    "read_predictions",
    "write_predictions",
]


def __getattr__(name: str) -> Any:
    if name == "load_split":
        from eval.contract import load_split

        return load_split
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
