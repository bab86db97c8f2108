"""Turning stored scores into the ranked table, its CSV export and the data a gIoU/cIoU plot needs.

Scores are stored as fractions (what the evaluation core returns); tables show percent, as the
papers do. Ranking: gIoU, then cIoU, then the earlier submission. Baselines sit at their score's
place in the table but take no rank. Each submission's declared protocol has its columns, and the
table can be filtered on it; a checkpoint chosen on the test split is flagged in the UI table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from eval.contract import KNOWN_TAGS

from .submission import CHECKPOINT_SELECTIONS, PROTOCOLS, Declaration

if TYPE_CHECKING:
    import pandas as pd

BASELINE_SUBMITTER = "leaderboard (baseline)"
DECIMALS = 1
_ANSWER_TAGS = ("multi-target", "no-target")
TEST_SELECTION_FLAG = "⚠ test"
DECLARATION_COLUMNS = ("protocol", "checkpoint_selection", "trained_on", "params", "code", "paper")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


@dataclass(frozen=True)
class Entry:
    """One scored row of the table: a submission or a baseline, with its evaluation summary."""

    model: str
    scores: dict[str, Any]
    at: float
    submitter: str
    baseline: bool = False
    link: str | None = None
    note: str | None = None
    submission_id: int | None = None
    declaration: Declaration | None = None  # None for baselines, which declare nothing

    @property
    def sort_key(self) -> tuple[float, float, float]:
        return (-_number(self.scores.get("giou")), -_number(self.scores.get("ciou")), self.at)


def _number(value: Any) -> float:
    """A score as a float, with a missing score ranking last."""
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else -math.inf


@dataclass(frozen=True)
class Filters:
    """Which declared protocols and checkpoint selections a table keeps; None keeps every value.

    Baselines always stay: they are the reference points a filtered table is read against.
    """

    protocols: frozenset[str] | None = None
    checkpoint_selections: frozenset[str] | None = None

    @classmethod
    def of(
        cls, *, protocols: Collection[str] | None = None, checkpoint_selections: Collection[str] | None = None
    ) -> Filters:
        """Validated filters; an unknown value is a ``ValueError`` naming the allowed ones."""
        return cls(
            protocols=_allowed(protocols, PROTOCOLS, "protocol"),
            checkpoint_selections=_allowed(checkpoint_selections, CHECKPOINT_SELECTIONS, "checkpoint selection"),
        )

    def keeps(self, entry: Entry) -> bool:
        if entry.baseline or entry.declaration is None:
            return True
        return (self.protocols is None or entry.declaration.protocol in self.protocols) and (
            self.checkpoint_selections is None or entry.declaration.checkpoint_selection in self.checkpoint_selections
        )

    def apply(self, entries: Iterable[Entry]) -> list[Entry]:
        return [entry for entry in entries if self.keeps(entry)]


def _allowed(values: Collection[str] | None, choices: tuple[str, ...], what: str) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    cleaned = frozenset(str(value).strip().lower() for value in values)
    unknown = sorted(cleaned - set(choices))
    if unknown:
        raise ValueError(f"cannot filter on the {what} {', '.join(map(repr, unknown))}: use {', '.join(choices)}")
    return cleaned


def rank(entries: Iterable[Entry], *, show_all: bool) -> list[tuple[int | None, Entry]]:
    """Entries in table order with their rank (None for baselines).

    Without ``show_all``, only each (submitter, model name) pair's best submission is kept: the
    name alone could be reused by someone else, and must not hide their row.
    """
    ordered = sorted(entries, key=lambda entry: entry.sort_key)
    if not show_all:
        seen: set[tuple[str, str]] = set()
        kept = []
        for entry in ordered:
            key = (entry.submitter, entry.model.casefold())
            if entry.baseline or key not in seen:
                kept.append(entry)
                seen.add(key)
        ordered = kept
    ranked: list[tuple[int | None, Entry]] = []
    position = 0
    for entry in ordered:
        if entry.baseline:
            ranked.append((None, entry))
        else:
            position += 1
            ranked.append((position, entry))
    return ranked


def rank_of(entries: Iterable[Entry], submission_id: int) -> int | None:
    """The rank of one submission among all submissions (the ``show_all`` table)."""
    for position, entry in rank(entries, show_all=True):
        if entry.submission_id == submission_id:
            return position
    return None


def tag_names(entries: Sequence[Entry]) -> list[str]:
    """Tags present in any entry: the contract's query-style tags, the split's own tags (sorted),
    then the answer-kind tags ``multi-target`` and ``no-target``."""
    present = {tag for entry in entries for tag in entry.scores.get("by_tag", {})}
    known = [tag for tag in KNOWN_TAGS if tag in present and tag not in _ANSWER_TAGS]
    answer = [tag for tag in _ANSWER_TAGS if tag in present]
    return known + sorted(present - set(known) - set(answer)) + answer


def _percent(value: Any, *, decimals: int | None) -> float:
    number = _number(value)
    if number == -math.inf:
        return math.nan
    return round(100 * number, decimals) if decimals is not None else 100 * number


def _interval(scores: dict[str, Any], metric: str) -> tuple[Any, Any]:
    bounds = scores.get("ci95", {}).get(metric) or (None, None)
    return bounds[0], bounds[1]


def score_columns(scores: dict[str, Any], tags: Sequence[str], *, decimals: int | None) -> dict[str, float]:
    """gIoU and cIoU with their 95% bootstrap interval, then gIoU/cIoU per tag, in percent."""
    columns: dict[str, float] = {}
    for metric, label in (("giou", "gIoU"), ("ciou", "cIoU")):
        low, high = _interval(scores, metric)
        columns[label] = _percent(scores.get(metric), decimals=decimals)
        columns[f"{label} CI low"] = _percent(low, decimals=decimals)
        columns[f"{label} CI high"] = _percent(high, decimals=decimals)
    by_tag = scores.get("by_tag", {})
    for tag in tags:
        tag_scores = by_tag.get(tag, {})
        columns[f"gIoU ({tag})"] = _percent(tag_scores.get("giou"), decimals=decimals)
        columns[f"cIoU ({tag})"] = _percent(tag_scores.get("ciou"), decimals=decimals)
    return columns


def plain_frame(entries: Sequence[Entry], *, show_all: bool) -> pd.DataFrame:
    """The table with plain-text model names and a separate link column (what the CSV holds)."""
    import pandas as pd  # imported on first use: a restart that shows no table does not pay for it

    tags = tag_names(entries)
    rows = []
    for position, entry in rank(entries, show_all=show_all):
        declared = entry.declaration
        rows.append(
            {
                "rank": position,
                "model": entry.model,
                "link": entry.link,
                **score_columns(entry.scores, tags, decimals=DECIMALS),
                **{column: getattr(declared, column) if declared else None for column in DECLARATION_COLUMNS},
                "n": entry.scores.get("n"),
                "submitter": entry.submitter,
                "date": datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "baseline": entry.baseline,
                "note": entry.note,
                "id": entry.submission_id,
            }
        )
    frame = pd.DataFrame(rows, columns=_columns(tags))
    for column in ("rank", "n", "id"):
        frame[column] = frame[column].astype("Int64")
    frame["params"] = frame["params"].astype("Float64")
    frame["baseline"] = frame["baseline"].astype(bool)
    return frame


def _columns(tags: Sequence[str]) -> list[str]:
    return [
        "rank",
        "model",
        "link",
        *score_columns({}, tags, decimals=None),
        *DECLARATION_COLUMNS,
        "n",
        "submitter",
        "date",
        "baseline",
        "note",
        "id",
    ]


def display_frame(entries: Sequence[Entry], *, show_all: bool) -> pd.DataFrame:
    """The table for a UI: model, code and paper columns are markdown links, the parameter count
    reads "7B", and a checkpoint chosen on the test split is flagged."""
    frame = plain_frame(entries, show_all=show_all)
    frame["model"] = [markdown_model(model, link) for model, link in zip(frame["model"], frame["link"], strict=True)]
    for column in ("code", "paper"):
        frame[column] = [markdown_model(column, url) if _present(url) else None for url in frame[column]]
    frame["checkpoint_selection"] = [
        TEST_SELECTION_FLAG if value == "test" else value for value in frame["checkpoint_selection"]
    ]
    frame["params"] = [format_params(value) for value in frame["params"]]
    return frame.drop(columns=["link"])


def _present(value: Any) -> bool:
    import pandas as pd

    return value is not None and value is not pd.NA and not (isinstance(value, float) and math.isnan(value))


def format_params(value: Any) -> str | None:
    """A parameter count as people write it: 7B, 350M, 1.3B; None when not given."""
    if not _present(value):
        return None
    number = float(value)
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= scale:
            return f"{number / scale:.3g}{suffix}"
    return f"{number:.3g}"


def markdown_model(name: str, link: str | None) -> str:
    """``[name](link)`` with the name's markdown characters escaped and the URL's parentheses encoded."""
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", name)
    if not link or (isinstance(link, float) and math.isnan(link)):
        return text
    url = link.replace("(", "%28").replace(")", "%29").replace("<", "%3C").replace(">", "%3E")
    return f"[{text}]({url})"


def plot_frame(entries: Sequence[Entry]) -> pd.DataFrame:
    """One point per table row (best per model): gIoU vs cIoU with their intervals, unrounded percent."""
    import pandas as pd

    rows = []
    for position, entry in rank(entries, show_all=False):
        rows.append(
            {
                "model": entry.model,
                "submitter": entry.submitter,
                "baseline": entry.baseline,
                "rank": position,
                **score_columns(entry.scores, (), decimals=None),
            }
        )
    columns = ["model", "submitter", "baseline", "rank", *score_columns({}, (), decimals=None)]
    frame = pd.DataFrame(rows, columns=columns)
    frame["rank"] = frame["rank"].astype("Int64")
    frame["baseline"] = frame["baseline"].astype(bool)
    return frame
