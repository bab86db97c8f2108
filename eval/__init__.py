"""The evaluation contract and the judge: predictions format, metrics and ``evaluate``.

The bottom layer of the project: it imports neither torch nor anything from ``llmseg`` or
``leaderboard``, so a leaderboard-only Space starts fast. ``load_split`` (which needs
``datasets``, slow to import) is imported on first use (PEP 562), so ``python -m eval`` on a
local folder never pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eval.evaluate import References, evaluate
from eval.predictions import PredictionsError, read_predictions, write_predictions
from eval.report import Report

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
