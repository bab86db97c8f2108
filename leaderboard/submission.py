"""What a submission is, and the checks it passes before anything is stored or counted.

Everything here is about the submitter's input only (file bytes, model name, link, note, user,
the declared protocol); checks against the ground truth (ids, mask sizes) happen when the file is
scored.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from eval import PredictionsError, read_predictions
from eval.rle import RLE

MAX_MODEL_NAME = 100
MAX_USER = 100
MAX_LINK = 500
MAX_NOTE = 1000
MAX_TRAINED_ON = 300

PROTOCOLS = ("zero-shot", "fine-tuned", "other")
CHECKPOINT_SELECTIONS = ("validation", "last", "test", "unknown")
DEFAULT_PROTOCOL = "other"
DEFAULT_CHECKPOINT_SELECTION = "unknown"
_PARAM_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
_PARAMS = re.compile(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbt]?)", re.IGNORECASE)


class SubmissionRejected(ValueError):
    """A submission that was not scored; the message is one sentence saying what to fix."""


@dataclass(frozen=True)
class Declaration:
    """How the submitter says the model was trained and its checkpoint chosen (not verified here).

    Attributes:
        protocol: ``zero-shot`` (never trained on this benchmark's training data),
            ``fine-tuned`` (trained on it) or ``other``.
        trained_on: free text, e.g. "ReasonSeg train + LLM-Seg40K train".
        checkpoint_selection: the split the checkpoint was chosen on: ``validation``, ``last``
            (the final one, no choice), ``test`` (allowed, and flagged in the table) or ``unknown``.
        params: the model's parameter count, if given.
        code: a link to the code; paper: a link to the paper.
    """

    protocol: str = DEFAULT_PROTOCOL
    trained_on: str | None = None
    checkpoint_selection: str = DEFAULT_CHECKPOINT_SELECTION
    params: float | None = None
    code: str | None = None
    paper: str | None = None


@dataclass(frozen=True)
class Submission:
    """A checked submission, ready to store: cleaned metadata plus the raw file and its hash."""

    user: str
    model_name: str
    link: str | None
    note: str | None
    content: bytes
    sha256: str
    benchmark: str
    declaration: Declaration = Declaration()


def read_upload(file: str | os.PathLike[str] | bytes, *, max_bytes: int) -> bytes:
    """Return the uploaded file's bytes, refusing a missing file or one over ``max_bytes``.

    A path's size is checked before it is read, so an oversized upload is never loaded.
    """
    if isinstance(file, (bytes, bytearray, memoryview)):
        content = bytes(file)
        _check_size(len(content), max_bytes)
        return content
    path = Path(file)
    if not path.is_file():
        raise SubmissionRejected(f"no file at {str(path)!r}: upload a predictions .jsonl file")
    _check_size(path.stat().st_size, max_bytes)
    content = path.read_bytes()
    _check_size(len(content), max_bytes)
    return content


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise SubmissionRejected(
            f"the file is {_human(size)}, over the {_human(max_bytes)} limit: "
            "submit compressed RLE masks (one JSON line per sample) at the ground truth's size"
        )


def _human(size: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def parse_predictions(content: bytes) -> dict[str, RLE]:
    """Parse a predictions file with the evaluation core; any problem is a ``SubmissionRejected``."""
    try:
        return read_predictions(content)
    except PredictionsError as error:  # nesting and integer-size limits included: eval enforces them
        raise SubmissionRejected(str(error)) from None


def required_text(value: str | None, *, what: str, limit: int) -> str:
    """Strip ``value`` and refuse an empty one, overlong text or control characters."""
    text = optional_text(value, what=what, limit=limit)
    if text is None:
        raise SubmissionRejected(f"the {what} is empty: give a {what}")
    return text


def optional_text(value: str | None, *, what: str, limit: int, multiline: bool = False) -> str | None:
    """Strip ``value`` (None when blank) and refuse overlong text or control characters."""
    if value is None or not str(value).strip():
        return None
    text = unicodedata.normalize("NFC", str(value).strip())
    if len(text) > limit:
        raise SubmissionRejected(f"the {what} has {len(text)} characters: keep it to {limit}")
    allowed = "\n" if multiline else ""
    if any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in text):
        raise SubmissionRejected(f"the {what} contains control characters: use plain text")
    return text


def clean_link(link: str | None, *, what: str = "link") -> str | None:
    """Accept an absolute http(s) URL with a host (the table renders it as a markdown link)."""
    text = optional_text(link, what=what, limit=MAX_LINK)
    if text is None:
        return None
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or any(ch.isspace() for ch in text):
        raise SubmissionRejected(f"the {what} {text!r} is not an http(s) URL: give e.g. https://arxiv.org/abs/...")
    return text


def clean_choice(value: str | None, *, what: str, choices: tuple[str, ...], default: str) -> str:
    """One of ``choices`` (case and surrounding space ignored); blank or None means ``default``."""
    if value is None or not str(value).strip():
        return default
    text = str(value).strip().lower()
    if text not in choices:
        raise SubmissionRejected(f"the {what} {str(value).strip()!r} is not one of {', '.join(choices)}: pick one")
    return text


def clean_params(value: float | int | str | None) -> float | None:
    """A positive parameter count from a number or a text such as ``7e9``, ``7B`` or ``350M``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        match = _PARAMS.fullmatch(value.strip().replace(",", "").replace("_", ""))
        if match:
            number = float(match.group(1)) * _PARAM_SUFFIXES[match.group(2).lower()]
    if number is None or not math.isfinite(number) or number < 1:
        raise SubmissionRejected(
            f"the parameter count {value!r} is not a positive number: write e.g. 7e9, 7B or 350M, or leave it empty"
        )
    return number


def clean_declaration(
    *,
    protocol: str | None = None,
    trained_on: str | None = None,
    checkpoint_selection: str | None = None,
    params: float | int | str | None = None,
    code: str | None = None,
    paper: str | None = None,
) -> Declaration:
    """Validate the declared protocol; blank choices take the defaults ``other`` and ``unknown``."""
    return Declaration(
        protocol=clean_choice(protocol, what="protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL),
        trained_on=optional_text(trained_on, what="training-data description", limit=MAX_TRAINED_ON),
        checkpoint_selection=clean_choice(
            checkpoint_selection,
            what="checkpoint selection",
            choices=CHECKPOINT_SELECTIONS,
            default=DEFAULT_CHECKPOINT_SELECTION,
        ),
        params=clean_params(params),
        code=clean_link(code, what="code link"),
        paper=clean_link(paper, what="paper link"),
    )


def prepare(
    file: str | os.PathLike[str] | bytes,
    *,
    model_name: str,
    user: str,
    link: str | None,
    note: str | None,
    max_bytes: int,
    benchmark: str,
    declaration: Declaration = Declaration(),
) -> tuple[Submission, dict[str, RLE]]:
    """Check everything that does not need the ground truth; return the submission and its masks.

    ``declaration`` is already cleaned (``clean_declaration``); ``benchmark`` is a known name.
    """
    cleaned_user = required_text(user, what="user name", limit=MAX_USER)
    cleaned_model = required_text(model_name, what="model name", limit=MAX_MODEL_NAME)
    cleaned_link = clean_link(link)
    cleaned_note = optional_text(note, what="note", limit=MAX_NOTE, multiline=True)
    content = read_upload(file, max_bytes=max_bytes)
    predictions = parse_predictions(content)
    submission = Submission(
        user=cleaned_user,
        model_name=cleaned_model,
        link=cleaned_link,
        note=cleaned_note,
        content=content,
        sha256=hashlib.sha256(content).hexdigest(),
        benchmark=benchmark,
        declaration=declaration,
    )
    return submission, predictions
