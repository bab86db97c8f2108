"""The predictions file: JSON Lines, one ``{"id": str, "mask": RLE}`` object per sample.

``mask`` is COCO RLE at the image's original size, compressed (``counts`` a string) or not
(``counts`` a list of ints); other keys in an object are ignored. Every problem is reported as a
``PredictionsError`` whose message is one sentence naming the first offending lines or ids, since
it is shown as is to whoever submitted the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from eval import rle
from eval.rle import RLE

# How many offending ids a message names before it says "and N more".
_NAMED = 3
# How much of one id a message quotes.
_ID_CHARS = 80
# No valid size or run length has more digits (pycocotools keeps them in 32-bit ints); refusing
# longer integers up front keeps Python's int-conversion limit (4300 digits) out of every caller.
MAX_INT_DIGITS = 20


class PredictionsError(ValueError):
    """A predictions file or mapping is invalid; the message names the first offending ids."""


def short_id(sample_id: object) -> str:
    """``repr`` of an id, cut to ``_ID_CHARS`` characters: a megabyte-long id must not become the message."""
    text = repr(sample_id)
    return text if len(text) <= _ID_CHARS else f"{text[: _ID_CHARS - 4]}...{text[-1]}"


def name_ids(ids: list[str]) -> str:
    """``'a', 'b', 'c' and 4 more``: enough ids to find the problem, short enough for one line."""
    named = ", ".join(short_id(i) for i in ids[:_NAMED])
    return named if len(ids) <= _NAMED else f"{named} and {len(ids) - _NAMED} more"


def read_predictions(source: str | Path | bytes) -> dict[str, RLE]:
    """Parse and check a predictions file (a path, or its content as bytes).

    Returns ``{id: RLE}`` with every mask as compressed RLE (``counts`` a string), checked to
    decode to exactly height*width pixels. Sizes are checked against a split by ``evaluate``.
    """
    text = _text(source)
    entries: dict[str, Any] = {}
    first_line: dict[str, int] = {}
    repeated: dict[str, list[int]] = {}  # only ids on several lines: every line they are on
    for number, line in enumerate(text.split("\n"), start=1):  # CRLF: JSON takes the "\r" as whitespace
        if not line or line.isspace():
            continue
        try:
            entry = _decode_line(line)
        except json.JSONDecodeError as error:
            raise PredictionsError(_not_json_message(text, number, error)) from None
        except _TooManyDigits as error:
            raise PredictionsError(
                f"line {number} has an integer of {error.digits} digits: sizes and run lengths have at most "
                f"{MAX_INT_DIGITS}"
            ) from None
        except RecursionError:  # the json module's own guard against deep nesting
            raise PredictionsError(
                f'line {number} nests JSON too deeply: write one flat {{"id": ..., "mask": ...}} object per line'
            ) from None
        if not isinstance(entry, dict):
            raise PredictionsError(f'line {number} is not a JSON object: expected {{"id": ..., "mask": ...}}')
        sample_id = entry.get("id")
        if not isinstance(sample_id, str) or not sample_id:
            raise PredictionsError(f'line {number} has no "id" string')
        if "mask" not in entry:
            raise PredictionsError(f'line {number} (id {short_id(sample_id)}) has no "mask"')
        if sample_id in entries:
            repeated.setdefault(sample_id, [first_line[sample_id]]).append(number)
            continue
        entries[sample_id] = entry["mask"]
        first_line[sample_id] = number
    if not entries:
        raise PredictionsError("the predictions file holds no predictions")
    if repeated:
        duplicates = sorted(repeated, key=first_line.__getitem__)
        first = duplicates[0]
        raise PredictionsError(
            f"duplicate id(s) {name_ids(duplicates)}: {short_id(first)} is on lines "
            f"{', '.join(map(str, repeated[first]))}; give each sample one line"
        )
    ids, cocos, areas = validated_masks(entries)
    # A parsed mask of just "size" and a counts string is canonical once checked: kept, not rebuilt.
    masks = [
        mask if len(mask) == 2 and type(mask["counts"]) is str else _canonical(coco)
        for mask, coco in zip(entries.values(), cocos, strict=True)
    ]
    return ValidatedPredictions(dict(zip(ids, masks, strict=True)), cocos, areas)


class ValidatedPredictions(dict):
    """``{id: RLE}`` as ``read_predictions`` returns it, remembering each mask's checked pycocotools form and
    area, so that ``evaluate`` does not check the same masks twice. A value replaced afterwards is checked again."""

    def __init__(self, masks: dict[str, RLE], cocos: list[dict[str, Any]], areas: np.ndarray) -> None:
        super().__init__(masks)
        self.checked = (list(masks), list(masks.values()), cocos, areas)

    def unchanged(self) -> bool:
        """True when no id or mask was replaced, added or removed since reading."""
        ids, masks, _, _ = self.checked
        if len(self) != len(ids) or any(a is not b for a, b in zip(self.values(), masks, strict=True)):
            return False
        return list(self) == ids


def validated_masks(predictions: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]], np.ndarray]:
    """Check every mask is RLE that decodes to exactly height*width pixels; return aligned lists of the ids,
    their masks in pycocotools form and their areas (int64)."""
    if isinstance(predictions, ValidatedPredictions):
        ids, masks, cocos, areas = predictions.checked
        if predictions.unchanged():
            return ids, cocos, areas
        known = {i: (mask, k) for k, (i, mask) in enumerate(zip(ids, masks, strict=True))}
        kept = {i: known[i][1] for i, value in predictions.items() if i in known and known[i][0] is value}
        rest_ids, rest_cocos, rest_areas = validated_masks({i: v for i, v in predictions.items() if i not in kept})
        rest = {i: k for k, i in enumerate(rest_ids)}
        order = list(predictions)
        return (
            order,
            [cocos[kept[i]] if i in kept else rest_cocos[rest[i]] for i in order],
            np.array([areas[kept[i]] if i in kept else rest_areas[rest[i]] for i in order], dtype=np.int64),
        )
    ids = list(predictions)
    for sample_id in ids:
        if not isinstance(sample_id, str):
            raise PredictionsError(f"prediction ids must be strings, got {short_id(sample_id)}")
    try:
        cocos, areas = rle.validate_with_areas([predictions[i] for i in ids])
    except rle.InvalidRLE as error:
        bad = [ids[p] for p in error.positions]
        raise PredictionsError(f"the mask of id(s) {name_ids(bad)} is not valid RLE: {error}") from None
    return ids, cocos, areas


def write_predictions(path: str | Path, items: Iterable[tuple[str, np.ndarray | RLE]]) -> None:
    """Write ``(id, mask)`` pairs as a predictions file; HxW arrays (nonzero = target) are RLE-encoded."""
    lines, seen = [], set()
    for sample_id, mask in items:
        if sample_id in seen:
            raise PredictionsError(f"duplicate id {short_id(sample_id)}: give each sample one prediction")
        seen.add(sample_id)
        encoded = rle.encode(mask) if isinstance(mask, np.ndarray) else _canonical(rle.validate(mask))
        lines.append(json.dumps({"id": sample_id, "mask": encoded}) + "\n")
    Path(path).write_text("".join(lines), encoding="utf-8")


class _TooManyDigits(Exception):
    def __init__(self, digits: int) -> None:
        self.digits = digits


def _bounded_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _TooManyDigits(digits)
    return int(literal)


_DECODER = json.JSONDecoder(parse_int=_bounded_int)
_JSON_WHITESPACE = json.decoder.WHITESPACE


def _decode_line(line: str) -> Any:
    """``_DECODER.decode(line)``, without its two wrappers when the line starts with the value (the usual
    case); anything else (leading whitespace, extra data, every error with its message) goes to ``decode``."""
    try:
        entry, end = _DECODER.scan_once(line, 0)
    except StopIteration:
        return _DECODER.decode(line)
    if end == len(line) or _JSON_WHITESPACE.match(line, end).end() == len(line):  # e.g. the "\r" of CRLF
        return entry
    return _DECODER.decode(line)


def _text(source: str | Path | bytes) -> str:
    if isinstance(source, (bytes, bytearray)):
        content = bytes(source)
    else:
        try:
            content = Path(source).read_bytes()
        except FileNotFoundError:
            raise PredictionsError(f"no predictions file at {str(source)!r}") from None
        except IsADirectoryError:
            raise PredictionsError(f"{str(source)!r} is a folder, not a predictions file") from None
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PredictionsError("the predictions file is not UTF-8 text (expected JSON Lines)") from None


def _not_json_message(text: str, number: int, error: json.JSONDecodeError) -> str:
    """Point a file that is one JSON document (not one object per line) at the right format."""
    try:
        _DECODER.decode(text)
    except (json.JSONDecodeError, _TooManyDigits, RecursionError):
        return f"line {number} is not valid JSON ({error.msg}): expected one JSON object per line"
    return 'the file is a single JSON document, not JSON Lines: write one {"id": ..., "mask": ...} object per line'


def _canonical(coco: dict[str, Any]) -> RLE:
    """The on-disk form of a validated mask: compressed counts as ``str``."""
    return {"size": list(coco["size"]), "counts": coco["counts"].decode("ascii")}
