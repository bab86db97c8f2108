"""The leaderboard: predictions files scored against a held-out split, ranked, with published numbers.

Built on the evaluation core only (no torch, no model code), so a leaderboard-only Space starts in
seconds::

    board = Leaderboard(LeaderboardSettings.from_env())
    board.submit("predictions.jsonl", model_name="my-model", user="me")
    board.table()
"""

from .board import Leaderboard, SubmissionResult
from .reported import REPORTED_LABEL
from .settings import LeaderboardSettings
from .submission import SubmissionRejected

__all__ = ["REPORTED_LABEL", "Leaderboard", "LeaderboardSettings", "SubmissionRejected", "SubmissionResult"]
