"""What a submission is, and the checks it passes before anything is stored or counted.

Everything here is about the submitter's input only (file bytes, model name, link, note, user);
checks against the ground truth (ids, mask sizes) happen when the file is scored.
"""

from __future__ import annotations

import hashlib
import os
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


class SubmissionRejected(ValueError):
    """A submission that was not scored; the message is one sentence saying what to fix."""


@dataclass(frozen=True)
class Submission:
    """A checked submission, ready to store: cleaned metadata plus the raw file and its hash."""

    user: str
    model_name: str
    link: str | None
    note: str | None
    content: bytes
    sha256: str


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
    except PredictionsError as error:
        raise SubmissionRejected(str(error)) from None
    except RecursionError:  # raised by the json module on deeply nested arrays or objects
        raise SubmissionRejected(
            'the file nests JSON too deeply: write one flat {"id", "mask"} object per line'
        ) from None


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


def clean_link(link: str | None) -> str | None:
    """Accept an absolute http(s) URL with a host (the table renders it as a markdown link)."""
    text = optional_text(link, what="link", limit=MAX_LINK)
    if text is None:
        return None
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or any(ch.isspace() for ch in text):
        raise SubmissionRejected(f"the link {text!r} is not an http(s) URL: give e.g. https://arxiv.org/abs/...")
    return text


def prepare(
    file: str | os.PathLike[str] | bytes,
    *,
    model_name: str,
    user: str,
    link: str | None,
    note: str | None,
    max_bytes: int,
) -> tuple[Submission, dict[str, RLE]]:
    """Check everything that does not need the ground truth; return the submission and its masks."""
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
    )
    return submission, predictions
