"""The evaluation contract and the judge: predictions format, metrics and ``evaluate``.

The bottom layer of the project: it imports neither torch nor anything from ``llmseg`` or
``leaderboard``, so a leaderboard-only Space starts fast.
"""

from eval.contract import load_split
from eval.evaluate import References, evaluate
from eval.predictions import PredictionsError, read_predictions, write_predictions
from eval.report import Report

__all__ = [
    "PredictionsError",
    "References",
    "Report",
    "evaluate",
    "load_split",
    "read_predictions",
    "write_predictions",
]
