"""The leaderboard: predictions files scored against a held-out split, ranked, with published numbers.

Built on the evaluation core only (no torch, no model code), so a leaderboard-only Space starts in
seconds::

    board = Leaderboard(LeaderboardSettings.from_env())
    board.submit("predictions.jsonl", model_name="my-model", user="me")
    board.table()
    board.compare(3, "baseline:empty")        # paired differences, intervals, p-values
    board.per_sample(3, user="me")            # one's own per-sample IoU (unless the benchmark forbids)
"""

from .board import Leaderboard, SubmissionResult
from .per_sample import Refused
from .reported import REPORTED_LABEL
from .settings import LeaderboardSettings
from .submission import SubmissionRejected

__all__ = [
    "REPORTED_LABEL",
    "Leaderboard",
    "LeaderboardSettings",
    "Refused",
    "SubmissionRejected",
    "SubmissionResult",
]
