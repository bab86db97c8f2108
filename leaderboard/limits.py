"""The fairness rules a submission must pass before it is stored: rate limit and duplicates.

Kept apart from the store so the policy (what counts, what the messages say) reads in one place;
the store runs these checks inside the same transaction that inserts the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from .submission import SubmissionRejected

DAY_S = 24 * 60 * 60


@dataclass(frozen=True)
class RateLimit:
    """At most ``per_window`` counted submissions per user in any ``window_s`` seconds.

    Pending and scored submissions count; rejected files and failed scorings do not.
    """

    per_window: int
    window_s: float = DAY_S

    def check(self, *, recent: int, oldest_recent: float | None) -> None:
        """Refuse when ``recent`` counted submissions (the oldest at ``oldest_recent``) fill the window."""
        if recent < self.per_window:
            return
        retry = "later"
        if oldest_recent is not None:
            retry = "after " + datetime.fromtimestamp(oldest_recent + self.window_s, UTC).strftime("%Y-%m-%d %H:%M UTC")
        raise SubmissionRejected(
            f"you have made {recent} submissions in the last 24 hours, the limit is {self.per_window}: "
            f"try again {retry}"
        )


def check_duplicate(duplicate_of: int | None, model_name: str | None) -> None:
    """Refuse a file this user already submitted (it would be scored identically)."""
    if duplicate_of is not None:
        raise SubmissionRejected(
            f"you already submitted this exact file (submission #{duplicate_of}, model {model_name!r}): "
            "submit a different predictions file"
        )
