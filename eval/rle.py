"""COCO run-length encoding helpers: the only mask format that crosses a file boundary.

Masks in memory are HxW bool NumPy arrays; on disk and over the wire they are COCO compressed
RLE dicts ``{"size": [h, w], "counts": str}`` (column-major runs, as pycocotools defines them).

pycocotools' C code trusts its input: a counts string whose runs do not add up to h*w, or that
has a zero-length run after the first, makes ``decode`` and ``merge`` read or write past their
buffers (a crash, or worse, on a server scoring uploaded files). ``validate``/``validate_many``
check exactly what that C code will see, so everything they accept is safe to hand to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

RLE = dict[str, Any]

# pycocotools keeps sizes and runs in 32-bit unsigned ints; stay well inside that.
_MAX_PIXELS = 2**31 - 1
# pycocotools decodes at most 6 characters per run correctly (its shifts are 32-bit `int`s);
# valid encodings of images under 2**29 pixels never need more.
_MAX_CHARS_PER_RUN = 6
# ``validate_many`` checks the strings in batches of about this many characters: small enough for the CPU's
# caches, large enough that NumPy's per-call overhead stays small (2**17 was ~8% faster than 2**16 and 2**18
# on 5,000 masks at 640x480 on the 2-core machine with 1 MiB of L2 per core).
_BATCH_CHARS = 1 << 17
# pycocotools' ``area`` builds a uint8 placeholder of the list length, which NumPy 2 rejects past 255.
_AREA_BATCH = 255


class InvalidRLE(ValueError):
    """Some RLEs of a batch are invalid: ``positions`` lists them; the message explains the first."""

    def __init__(self, positions: list[int], reason: str) -> None:
        super().__init__(reason)
        self.positions = positions


def encode(mask: np.ndarray) -> RLE:
    """Encode an HxW mask (nonzero = foreground) as compressed RLE with a ``str`` counts field.

    pycocotools needs exactly 0/1 bytes (a 255 breaks its run counting), hence the ``!= 0``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW mask, got an array of shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def to_pycoco(rle: RLE) -> dict[str, Any]:
    """Return the form pycocotools' C functions take: compressed counts as bytes.

    Checks the structure only (``validate`` checks the runs). Uncompressed RLE (``counts`` a list
    of ints) is compressed first, zero-length runs after the first merged away. Raises
    ``ValueError`` on a malformed dict; the caller names the sample.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError('a mask must be an object with "size" and "counts"')
    size = rle["size"]
    plain = type(size) is list and len(size) == 2 and type(size[0]) is int and type(size[1]) is int  # the common case
    if not plain and (
        not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_int(v) and v > 0 for v in size)
    ):
        raise ValueError('"size" must be [height, width] with two positive integers')
    if plain and (size[0] <= 0 or size[1] <= 0):
        raise ValueError('"size" must be [height, width] with two positive integers')
    height, width = int(size[0]), int(size[1])
    if height * width > _MAX_PIXELS:
        raise ValueError(f'"size" {height}x{width} is too large (at most {_MAX_PIXELS} pixels)')
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            raise ValueError('uncompressed "counts" must be a list of non-negative integers')
        if sum(counts) != height * width:
            raise ValueError(f"run lengths sum to {sum(counts)}, expected height*width = {height * width}")
        runs = _without_empty_runs([int(c) for c in counts])
        return mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
    if isinstance(counts, str):
        counts = counts.encode("ascii") if counts.isascii() else None
    if not isinstance(counts, bytes):
        raise ValueError('"counts" must be an ASCII string (compressed RLE) or a list of ints')
    return {"size": [height, width], "counts": counts}


def _plain_pycoco(rle: Any) -> dict[str, Any] | None:
    """``to_pycoco`` of the common case (a plain dict, ``[h, w]`` ints, an ASCII counts string) in fewer steps;
    None for anything else, which ``to_pycoco`` then checks (and explains)."""
    if type(rle) is not dict:
        return None
    size, counts = rle.get("size"), rle.get("counts")
    if type(size) is not list or len(size) != 2 or type(counts) is not str or not counts.isascii():
        return None
    height, width = size
    if type(height) is not int or type(width) is not int or height <= 0 or width <= 0:
        return None
    if height * width > _MAX_PIXELS:
        return None
    return {"size": [height, width], "counts": counts.encode("ascii")}


def validate(rle: RLE) -> dict[str, Any]:
    """Check that an RLE is safe for pycocotools and covers exactly h*w pixels; return its pycocotools form."""
    return validate_many([rle])[0]


def validate_many(rles: Sequence[RLE]) -> list[dict[str, Any]]:
    """``validate`` for many RLEs at once (vectorised); raises ``InvalidRLE`` naming every bad position."""
    return validate_with_areas(rles)[0]


def validate_with_areas(rles: Sequence[RLE]) -> tuple[list[dict[str, Any]], np.ndarray]:
    """``validate_many``, and each mask's foreground pixel count (int64, as ``areas`` gives): the check
    decodes every run anyway, so the areas cost one more sum rather than another pass of pycocotools."""
    cocos: list[dict[str, Any]] = []
    bad: dict[int, str] = {}
    for position, rle in enumerate(rles):
        try:
            cocos.append(_plain_pycoco(rle) or to_pycoco(rle))
        except ValueError as error:
            bad[position] = str(error)
            cocos.append({"size": [1, 1], "counts": b""})  # placeholder, reported below
    pixels = np.array([c["size"][0] * c["size"][1] for c in cocos], dtype=np.int64)
    strings = [c["counts"] for c in cocos]
    problems, totals = np.zeros(len(cocos), np.int8), np.zeros(len(cocos), np.int64)
    foreground = np.zeros(len(cocos), np.int64)
    start = 0
    while start < len(strings):  # batches of about _BATCH_CHARS characters keep the arrays in the CPU's cache
        end, chars = start, 0
        while end < len(strings) and (end == start or chars + len(strings[end]) <= _BATCH_CHARS):
            chars += len(strings[end])
            end += 1
        problems[start:end], totals[start:end], foreground[start:end] = _check_counts(
            strings[start:end], pixels[start:end]
        )
        start = end
    for position in np.flatnonzero(problems).tolist():
        if position not in bad:
            bad[position] = _PROBLEMS[problems[position]].format(total=totals[position], pixels=pixels[position])
    if bad:
        positions = sorted(bad)
        raise InvalidRLE(positions, bad[positions[0]])
    return cocos, foreground


_PROBLEMS = {
    1: "compressed RLE string has a character outside the RLE alphabet",
    2: "compressed RLE string ends in the middle of a run length",
    3: "compressed RLE string has a run length too long to be valid",
    4: "compressed RLE string has a zero-length run after the first",
    5: "run lengths sum to {total}, expected height*width = {pixels}",
}


def _check_counts(counts: Sequence[bytes], pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per compressed string: a problem code (0 = fine, else a key of ``_PROBLEMS``), the run sum and the
    foreground (the sum of the odd runs; meaningful only where the code is 0).

    Decodes all strings in one pass over their concatenation, the way pycocotools' ``rleFrString``
    does: each run is a little-endian group of 5-bit digits, one character each (``chr(48 + d)``;
    bit 0x20 = "more characters follow", bit 0x10 of the last = sign); from the fourth run on, a
    value is a delta to the run two places back; runs are C ``unsigned int``s, so the arithmetic
    is done in wrapping uint32 too.
    """
    n = len(counts)
    problems = np.zeros(n, dtype=np.int8)

    def flag(strings: np.ndarray, code: int) -> None:
        strings = strings[problems[strings] == 0]  # the first problem found is the one reported
        problems[strings] = code

    lengths = np.fromiter(map(len, counts), dtype=np.int64, count=n)
    bounds = np.cumsum(lengths)  # where each string ends in the concatenation

    def strings_of(char_positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(bounds, char_positions, side="right")

    chars = np.frombuffer(b"".join(counts), dtype=np.uint8) - np.uint8(48)  # bytes below "0" wrap above 63
    if chars.max(initial=0) > 63:
        flag(strings_of(np.flatnonzero(chars > 63)), 1)
    more = chars >= 32
    nonempty = np.flatnonzero(lengths)
    last = bounds[nonempty] - 1
    flag(nonempty[more[last]], 2)
    more[last] = False  # a group never spans two strings
    ends = np.flatnonzero(~more)
    # A one-character group's value (most groups are one character): a group's last character is below 32,
    # so its value is its 5 bits, less 32 when bit 0x10 (the sign) is set, which ``(c ^ 16) - 16`` gives in
    # wrapping uint32 (faster than a table lookup).
    values = chars[ends].astype(np.uint32)
    values ^= np.uint32(16)
    values -= np.uint32(16)
    sizes = np.diff(ends, prepend=-1)
    multi = np.flatnonzero(sizes > 1)
    if multi.size:
        multi_sizes = sizes[multi]
        longest = int(multi_sizes.max())
        if longest > _MAX_CHARS_PER_RUN:
            flag(strings_of(ends[multi[multi_sizes > _MAX_CHARS_PER_RUN]]), 3)
        starts = ends[multi] - multi_sizes + 1
        value = (chars[starts] & 0x1F).astype(np.uint32)
        for j in range(1, min(longest, _MAX_CHARS_PER_RUN)):
            longer = np.flatnonzero(multi_sizes > j)
            value[longer] += (chars[starts[longer] + j] & 0x1F).astype(np.uint32) << np.uint32(5 * j)
        sign = ((chars[ends[multi]] >> 4) & 1).astype(np.uint32)  # bit 0x10 of a group's last character
        value -= sign << (5 * np.minimum(multi_sizes, _MAX_CHARS_PER_RUN)).astype(np.uint32)
        values[multi] = value

    groups = np.diff(np.searchsorted(ends, bounds), prepend=0)  # runs per string
    first = np.cumsum(groups) - groups
    runs = _undo_deltas(values, first, groups)
    heads = first[nonempty]
    zero = runs == 0
    zero[heads] = False
    if zero.any():
        flag(strings_of(ends[zero]), 4)
    # Sum each string's runs of each parity apart: the two add up to its total, and those at odd positions
    # within it are its foreground. A string's runs of one parity are one block of the strided view.
    totals, foreground = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for parity in (0, 1):
        block_start = (first + 1 - parity) // 2
        filled = np.flatnonzero((first + groups + 1 - parity) // 2 > block_start)
        if filled.size:
            sums = np.add.reduceat(runs[parity::2], block_start[filled], dtype=np.int64)
            totals[filled] += sums
            odd = first[filled] % 2 != parity
            foreground[filled[odd]] = sums[odd]
    flag(np.flatnonzero(totals != pixels), 5)
    return problems, totals, foreground


def _undo_deltas(values: np.ndarray, first: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Run k of a string = value k + run k-2 for k >= 3: a cumulative sum over every other run,
    restarted at each string, the head (k = 0) standing alone; uint32 wrapping, as in C."""
    heads = first[groups > 0]
    restarted = values.copy()
    restarted[heads] = 0
    runs = np.empty_like(values)
    for parity in (0, 1):
        every_other = np.cumsum(restarted[parity::2], dtype=np.uint32)
        # Each string's runs of this parity form one block of the strided view; subtract the sum before it.
        block_start = (first + 1 - parity) // 2
        block_end = (first + groups + 1 - parity) // 2
        before = np.concatenate((np.zeros(1, np.uint32), every_other))[block_start]
        runs[parity::2] = every_other - np.repeat(before, block_end - block_start)
    runs[heads] = values[heads]
    return runs


def _without_empty_runs(counts: list[int]) -> list[int]:
    """Merge zero-length runs after the first into their neighbours (the same mask, safe for pycocotools)."""
    runs: list[int] = []
    merge_next = False
    for index, count in enumerate(counts):
        if merge_next:
            runs[-1] += count
            merge_next = False
        elif count == 0 and index > 0:
            merge_next = True
        else:
            runs.append(count)
    return runs


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def decode(rle: RLE) -> np.ndarray:
    """Decode an RLE dict (compressed or not) to an HxW bool array, after ``validate``."""
    return mask_utils.decode(validate(rle)).astype(bool)


def area(rle: RLE) -> int:
    """Number of foreground pixels, computed in the RLE domain, after ``validate``."""
    return int(mask_utils.area(validate(rle)))


def areas(cocos: list[dict[str, Any]]) -> np.ndarray:
    """Foreground pixel counts (int64) of many validated masks in pycocotools form, in batches."""
    counts = [mask_utils.area(cocos[i : i + _AREA_BATCH]) for i in range(0, len(cocos), _AREA_BATCH)]
    return np.concatenate(counts).astype(np.int64) if counts else np.zeros(0, dtype=np.int64)
