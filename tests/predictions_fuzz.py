"""Malformed predictions files for fuzzing the judge: valid files, mutated at random.

Shared by ``tests/test_eval_fuzz.py`` (hypothesis drives the ``random.Random``, a bounded run)
and ``bench/fuzz_predictions.py`` (10,000+ seeded files). Each mutation is one way a real upload
goes wrong: truncation, huge and negative numbers, wrong types, deep nesting, bad RLE characters,
wrong run sums, byte-order marks and CRLF, binary bytes, duplicated or dropped lines.

``outcome(content, references)`` is the oracle: the content must either score or be refused
with one clean ``PredictionsError`` sentence; anything else is returned as a failure. Holds no
tests itself.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from eval import PredictionsError, References, read_predictions
from eval.rle import encode, to_pycoco

HEIGHT, WIDTH = 6, 8
N_SAMPLES = 4


def tiny_split() -> tuple[References, dict[str, np.ndarray]]:
    """Four 6x8 samples (one with an ignore region, one empty) and their ground-truth masks."""
    rng = np.random.default_rng(0)
    masks = {f"q{i}": rng.random((HEIGHT, WIDTH)) < 0.4 for i in range(N_SAMPLES)}
    masks["q3"][:] = False
    ignore = np.zeros((HEIGHT, WIDTH), bool)
    ignore[0] = True
    ids = list(masks)
    return (
        References(
            ids=ids,
            sizes=[(HEIGHT, WIDTH)] * N_SAMPLES,
            tags=[["long"], ["short"], ["long"], ["no-target"]],
            masks=[to_pycoco(encode(m)) for m in masks.values()],
            ignores=[to_pycoco(encode(ignore))] + [None] * (N_SAMPLES - 1),
        ),
        masks,
    )


def _valid_entries(rnd: random.Random, masks: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    entries = []
    for sample_id, mask in masks.items():
        guess = np.roll(mask, rnd.randint(-2, 2), axis=1)
        rle = encode(guess)
        if rnd.random() < 0.3:  # uncompressed: counts a list of ints
            flat = guess.flatten(order="F").astype(np.int8)
            changes = np.flatnonzero(np.diff(flat)) + 1
            bounds = np.concatenate(([0], changes, [flat.size]))
            runs = np.diff(bounds).tolist()
            rle = {"size": [HEIGHT, WIDTH], "counts": ([0] if flat[0] else []) + runs}
        entries.append({"id": sample_id, "mask": rle})
    return entries


def _huge_number(rnd: random.Random) -> Any:
    """A number no size or run can be; a long integer as a placeholder ``_line`` spells out (Python
    refuses to print integers over 4,300 digits)."""
    long_literal = rnd.choice(["", "-"]) + "1" + "0" * rnd.randint(10, 6000)
    return rnd.choice([f"{_LITERAL}{long_literal}", 2**32, 2**31, 2**64, -1, 1e308, -0.0, 1.5])


def _wrong_type(rnd: random.Random) -> Any:
    return rnd.choice([None, True, False, "", "x", 0, -3, 2.5, [], {}, [[]], {"size": None}, ["a"], "\x00"])


def _nested(rnd: random.Random, value: Any = 1) -> str:
    depth = rnd.choice([5, 50, 500, 990, 5000, 100_000])
    opener, closer = rnd.choice([("[", "]"), ('{"a":', "}")])
    return opener * depth + json.dumps(value) + closer * depth


def _mutate_entry(rnd: random.Random, entry: dict[str, Any]) -> dict[str, Any] | str:
    """One entry changed in one way (a dict, or raw text when JSON cannot express it)."""
    entry = json.loads(json.dumps(entry))
    mask = entry.get("mask") if isinstance(entry, dict) else None
    if not (isinstance(mask, dict) and isinstance(mask.get("size"), list) and len(mask["size"]) == 2):
        return entry  # already broken by an earlier mutation
    if not isinstance(mask.get("counts"), (str, list)):
        return entry
    kind = rnd.randrange(9)
    if kind == 0:  # a huge or negative number where a size or run goes
        target = rnd.choice(["size0", "size1", "count"])
        if target == "count" and isinstance(mask["counts"], list) and mask["counts"]:
            mask["counts"][rnd.randrange(len(mask["counts"]))] = _huge_number(rnd)
        else:
            mask["size"][0 if target == "size0" else 1] = _huge_number(rnd)
    elif kind == 1:  # a wrong type somewhere
        where = rnd.choice(["id", "mask", "size", "counts", "size0"])
        if where == "id":
            entry["id"] = _wrong_type(rnd)
        elif where == "mask":
            entry["mask"] = _wrong_type(rnd)
        elif where == "size0":
            mask["size"][0] = _wrong_type(rnd)
        else:
            mask[where] = _wrong_type(rnd)
    elif kind == 2:  # bad characters in a compressed counts string
        counts = mask["counts"] if isinstance(mask["counts"], str) else encode(np.ones((HEIGHT, WIDTH)))["counts"]
        position = rnd.randint(0, len(counts))
        bad = rnd.choice(["/", "\x7f", " ", "é", "\\", '"', "~", "\x00", "\U0001f600", "\ud800", "0" * 12])
        mask["counts"] = counts[:position] + bad + counts[position:]
    elif kind == 3:  # runs that do not add up to height*width
        counts = mask["counts"]
        if isinstance(counts, list):
            if counts:
                counts[rnd.randrange(len(counts))] += rnd.choice([-1, 1, 7])
            else:
                counts.append(1)
        else:
            mask["counts"] = rnd.choice([counts[:-1], counts + rnd.choice("0123456789:;<=>?"), counts[1:], ""])
    elif kind == 4:  # a size that is not the image's
        mask["size"] = rnd.choice([[WIDTH, HEIGHT], [HEIGHT, WIDTH + 1], [1, 1], [HEIGHT], [HEIGHT, WIDTH, 1], []])
    elif kind == 5:  # a missing key
        del entry[rnd.choice(["id", "mask"])]
    elif kind == 6:  # nesting where a value goes
        raw = json.dumps(entry)
        key = rnd.choice(['"mask": ', '"counts": ', '"size": ', '"id": '])
        if key in raw:
            start = raw.index(key) + len(key)
            return raw[:start] + _nested(rnd) + ", " + raw[start:]
    elif kind == 7:  # an id that is not in the split, or an enormous one
        entry["id"] = rnd.choice(["unknown", "q0 ", "Q0", "x" * 100_000, "q\u0000", "q1\ud800"])
    else:  # uncompressed counts with zero-length runs or an empty list
        entry["mask"]["counts"] = rnd.choice([[0, 0, HEIGHT * WIDTH], [HEIGHT * WIDTH, 0], [], [0]])
    return entry


_LITERAL = "__literal__"


def _line(value: dict[str, Any] | str) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(f'"{_LITERAL}(-?[0-9]+)"', r"\1", text)


def mutated_file(rnd: random.Random, masks: dict[str, np.ndarray]) -> bytes:
    """A predictions file for ``masks``, valid or broken in one to three ways."""
    lines = [_line(e) for e in _valid_entries(rnd, masks)]
    for _ in range(rnd.choice([0, 1, 1, 1, 2, 3])):
        kind = rnd.randrange(6)
        if kind <= 1 and lines:  # one entry mutated
            position = rnd.randrange(len(lines))
            if _is_json(lines[position]):
                lines[position] = _line(_mutate_entry(rnd, json.loads(lines[position])))
        elif kind == 2 and lines:  # a line duplicated, dropped or replaced by junk
            position = rnd.randrange(len(lines))
            action = rnd.randrange(3)
            if action == 0:
                lines.insert(position, lines[position])
            elif action == 1:
                del lines[position]
            else:
                lines[position] = rnd.choice(["null", "[]", "42", '"text"', "{", _nested(rnd), "[" * 100_000])
        elif kind == 3:  # the file is one JSON document
            lines = [json.dumps([json.loads(line) for line in lines if _is_json(line)])]
        else:
            break
    text = "\n".join(lines) + rnd.choice(["\n", "", "\n\n"])
    if rnd.random() < 0.15:
        text = text.replace("\n", "\r\n")
    content = text.encode("utf-8", errors="surrogatepass")
    if rnd.random() < 0.1:
        content = b"\xef\xbb\xbf" + content
    return _byte_damage(rnd, content) if rnd.random() < 0.3 else content


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def _byte_damage(rnd: random.Random, content: bytes) -> bytes:
    """Truncation, a BOM in the middle, binary or invalid UTF-8 bytes, a flipped bit."""
    kind = rnd.randrange(5)
    position = rnd.randint(0, len(content))
    if kind == 0:
        return content[:position]
    if kind == 1:
        return content[:position] + b"\xef\xbb\xbf" + content[position:]
    if kind == 2:
        return content[:position] + bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16))) + content[position:]
    if kind == 3 and content:
        flipped = bytearray(content)
        flipped[min(position, len(content) - 1)] ^= 1 << rnd.randrange(8)
        return bytes(flipped)
    return content[:position] + rnd.choice([b"\x00", b"\xff\xfe", b"\x80", b"\r", b"\x1a"]) + content[position:]


# A refusal must be one sentence: one line, not empty, not a wall of text, and name what to look at.
_MAX_MESSAGE = 400
_NAMES_SOMETHING = re.compile(r"\bline \d+|\bid\(?s?\)?\b|'[^']*'|UTF-8|no predictions|JSON Lines|JSON document")


def refusal_problem(error: BaseException) -> str | None:
    """Why a refusal is not clean, or None when it is."""
    if not isinstance(error, PredictionsError):
        return f"{type(error).__name__} instead of PredictionsError: {str(error)[:200]}"
    message = str(error)
    if not message or "\n" in message or len(message) > _MAX_MESSAGE:
        return f"not one short sentence ({len(message)} characters): {message[:200]!r}"
    if not _NAMES_SOMETHING.search(message):
        return f"names no line or id: {message!r}"
    return None


def parse_outcome(content: bytes) -> tuple[str, Any]:
    """``("parsed", predictions)``, ``("rejected", message)`` or ``("bad", why)`` for the parsing step alone.

    Parsing reaches no pycocotools C code with unchecked input; scoring does, so callers run
    ``score_outcome`` on parsed files in a subprocess.
    """
    try:
        return "parsed", read_predictions(content)
    except Exception as error:  # noqa: BLE001 - the oracle classifies every exception
        problem = refusal_problem(error)
        return ("bad", problem) if problem else ("rejected", str(error))


def score_outcome(content: bytes, references: References, evaluate: Callable[..., Any]) -> tuple[str, str]:
    """``("scored", gIoU)``, ``("rejected", message)`` or ``("bad", why)`` for parsing and scoring."""
    try:
        report = evaluate(content, references, n_bootstrap=0)
    except Exception as error:  # noqa: BLE001
        problem = refusal_problem(error)
        return ("bad", problem) if problem else ("rejected", str(error))
    if not 0.0 <= report.giou <= 1.0 or not 0.0 <= report.ciou <= 1.0:
        return "bad", f"scores out of range: {report.giou}, {report.ciou}"
    return "scored", repr(report.giou)


def score_folder_main(folder: str) -> int:
    """Score every ``*.jsonl`` in ``folder`` against ``tiny_split()``, one JSON line per file, flushed before
    the next file starts: run as a subprocess, a crash in C code kills it and the last line names the culprit."""
    from pathlib import Path

    from eval import evaluate

    references, _ = tiny_split()
    for path in sorted(Path(folder).glob("*.jsonl")):
        print(json.dumps({"file": path.name, "started": True}), flush=True)
        kind, detail = score_outcome(path.read_bytes(), references, evaluate)
        print(json.dumps({"file": path.name, "outcome": kind, "detail": detail[:300]}), flush=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(score_folder_main(sys.argv[1]))
