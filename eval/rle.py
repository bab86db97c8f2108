"""COCO run-length encoding helpers: the only mask format that crosses a file boundary.

Masks in memory are HxW bool NumPy arrays; on disk and over the wire they are COCO compressed
RLE dicts ``{"size": [h, w], "counts": str}`` (column-major runs, as pycocotools defines them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

RLE = dict[str, Any]


def encode(mask: np.ndarray) -> RLE:
    """Encode an HxW bool (or 0/1) mask as compressed RLE with a ``str`` counts field."""
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW mask, got an array of shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def to_pycoco(rle: RLE) -> dict[str, Any]:
    """Return the form pycocotools' C functions take: compressed counts as bytes.

    Uncompressed RLE (``counts`` a list of ints) is compressed first. Raises ``ValueError`` on a
    malformed dict; the caller names the sample.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError('a mask must be an object with "size" and "counts"')
    size = rle["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        raise ValueError('"size" must be [height, width] with two non-negative integers')
    height, width = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise ValueError('uncompressed "counts" must be a list of non-negative integers')
        if sum(counts) != height * width:
            raise ValueError(f"run lengths sum to {sum(counts)}, expected height*width = {height * width}")
        return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    if isinstance(counts, str):
        counts = counts.encode("ascii", errors="strict") if counts.isascii() else None
    if not isinstance(counts, bytes):
        raise ValueError('"counts" must be an ASCII string (compressed RLE) or a list of ints')
    return {"size": [height, width], "counts": counts}


def validate(rle: RLE) -> dict[str, Any]:
    """Check that an RLE decodes to exactly h*w pixels; return its pycocotools form.

    pycocotools' decoder does not check run-length sums, so this decodes the run lengths of the
    compressed string itself and compares their sum with h*w.
    """
    coco = to_pycoco(rle)
    height, width = coco["size"]
    total = _compressed_run_sum(coco["counts"])
    if total != height * width:
        raise ValueError(f"run lengths sum to {total}, expected height*width = {height * width}")
    return coco


def _compressed_run_sum(counts: bytes) -> int:
    """Sum the run lengths of a COCO compressed-RLE string (LEB128-like, 5 bits a char, delta-coded)."""
    runs: list[int] = []
    pos = 0
    n = len(counts)
    while pos < n:
        value, shift, more = 0, 0, True
        while more:
            if pos >= n:
                raise ValueError("compressed RLE string ends in the middle of a run length")
            c = counts[pos] - 48
            if c < 0 or c > 63:
                raise ValueError("compressed RLE string has a character outside the RLE alphabet")
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            pos += 1
            shift += 1
            if not more and (c & 0x10):
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError("compressed RLE string decodes to a negative run length")
        runs.append(value)
    return sum(runs)


def decode(rle: RLE) -> np.ndarray:
    """Decode an RLE dict (compressed or not) to an HxW bool array."""
    return mask_utils.decode(to_pycoco(rle)).astype(bool)


def area(rle: RLE) -> int:
    """Number of foreground pixels, computed in the RLE domain."""
    return int(mask_utils.area(to_pycoco(rle)))
