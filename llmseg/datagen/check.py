"""Stage 4a: decide which generated questions become samples, and why the others do not.

Every rejection has one reason (the first check it fails, in the order of ``REASONS``), so the
counts in the run summary add up to the number of questions dropped. A reply that is not the
requested JSON is one ``malformed-json`` rejection for the whole reply.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from llmseg.datagen.records import ImageRecord

MALFORMED_JSON = "malformed-json"
MALFORMED_ITEM = "malformed-item"
EMPTY_TEXT = "empty-text"
TOO_LONG = "too-long"
NO_OBJECT = "no-object"
UNKNOWN_OBJECT = "unknown-object"
LEAK = "leak"
DUPLICATE = "duplicate"
EMPTY_MASK = "empty-mask"
REASONS = (
    MALFORMED_JSON,
    MALFORMED_ITEM,
    EMPTY_TEXT,
    TOO_LONG,
    NO_OBJECT,
    UNKNOWN_OBJECT,
    LEAK,
    DUPLICATE,
    EMPTY_MASK,
)


@dataclass(frozen=True)
class CheckConfig:
    """How strict the checks are.

    ``leak_check``: ``targets`` rejects a question naming an answer object's category (or a
    synonym, or its plural); ``all`` rejects naming any listed category; ``off`` checks nothing.
    """

    leak_check: Literal["targets", "all", "off"] = "targets"
    max_question_words: int = 60
    max_answer_words: int = 80

    def __post_init__(self) -> None:
        if self.leak_check not in ("targets", "all", "off"):
            raise ValueError("--leak-check must be targets, all or off")
        if self.max_question_words < 1 or self.max_answer_words < 1:
            raise ValueError("word limits must be at least 1")


@dataclass
class Question:
    """A question that passed: ``index`` is its position in the reply, ``object_ids`` sorted, unique."""

    index: int
    question: str
    answer: str
    object_ids: list[int]


@dataclass
class Rejection:
    """A dropped question (``index`` None for a whole reply) with its reason and a detail."""

    reason: str
    detail: str
    index: int | None = None
    question: str = ""


def parse_reply(text: str) -> list[Any]:
    """The list of question items in a reply; raises ``ValueError`` when it is not the JSON asked for.

    Tolerates what chat models add around JSON: code fences and prose before or after the object.
    """
    stripped = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        start, end = stripped.find("{"), stripped.rfind("}")
        if start < 0 or end <= start:
            raise ValueError("no JSON object in the reply") from None
        try:
            data = json.loads(stripped[start : end + 1])
        except json.JSONDecodeError as error:
            raise ValueError(f"invalid JSON ({error.msg})") from None
    if isinstance(data, dict):
        data = data.get("questions")
    if not isinstance(data, list):
        raise ValueError('the reply is not {"questions": [...]}')
    return data


@lru_cache(maxsize=4096)
def _name_pattern(name: str) -> re.Pattern[str]:
    """Whole-word match of a category name, its plural, and its words joined by spaces or hyphens."""
    words = [re.escape(word) for word in name.split()]
    return re.compile(r"\b" + r"[\s-]+".join(words) + r"(?:e?s)?\b", re.IGNORECASE)


def _object_ids(value: Any) -> list[int] | None:
    """Ids as ints (digit strings accepted, as models write them), or None when not a list of ids."""
    if not isinstance(value, list):
        return None
    ids = []
    for item in value:
        if isinstance(item, bool):
            return None
        if isinstance(item, int):
            ids.append(item)
        elif isinstance(item, str) and item.strip().isdigit():
            ids.append(int(item))
        else:
            return None
    return sorted(set(ids))


def _normalise(question: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", question.lower()).split())


def check_reply(text: str, record: ImageRecord, config: CheckConfig) -> tuple[list[Question], list[Rejection]]:
    """Split one reply's questions into kept and rejected, against the image's object list."""
    try:
        items = parse_reply(text)
    except ValueError as error:
        return [], [Rejection(MALFORMED_JSON, str(error), None, text[:200])]
    kept: list[Question] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        verdict = _check_item(index, item, record, config, seen)
        if isinstance(verdict, Rejection):
            rejected.append(verdict)
        else:
            kept.append(verdict)
            seen.add(_normalise(verdict.question))
    return kept, rejected


def _check_item(
    index: int, item: Any, record: ImageRecord, config: CheckConfig, seen: set[str]
) -> Question | Rejection:
    if not isinstance(item, dict):
        return Rejection(MALFORMED_ITEM, "an item is not an object", index)
    question, answer, ids = item.get("question"), item.get("answer"), _object_ids(item.get("object_ids"))
    if not isinstance(question, str) or not isinstance(answer, str) or ids is None:
        detail = "needs question and answer strings and an object_ids list"
        return Rejection(MALFORMED_ITEM, detail, index, str(question))
    question, answer = question.strip(), answer.strip()
    if not question or not answer:
        return Rejection(EMPTY_TEXT, "empty question or answer", index, question)
    if len(question.split()) > config.max_question_words or len(answer.split()) > config.max_answer_words:
        return Rejection(TOO_LONG, f"over {config.max_question_words}/{config.max_answer_words} words", index, question)
    if not ids:
        return Rejection(NO_OBJECT, "no object ids", index, question)
    unknown = [i for i in ids if record.object(i) is None]
    if unknown:
        return Rejection(UNKNOWN_OBJECT, f"ids {unknown} not among 1..{len(record.objects)}", index, question)
    targets = [record.objects[i - 1] for i in ids]
    if config.leak_check != "off":
        pool = targets if config.leak_check == "targets" else record.objects
        for name in sorted({n for obj in pool for n in obj.names}):
            if _name_pattern(name).search(question):
                return Rejection(LEAK, f"names {name!r}", index, question)
    if _normalise(question) in seen:
        return Rejection(DUPLICATE, "same question as an earlier one for this image", index, question)
    if not any(obj.area for obj in targets):
        return Rejection(EMPTY_MASK, "the named objects have empty masks", index, question)
    return Question(index, question, answer, ids)
