"""RLE helpers: round trips, and validation that accepts exactly what pycocotools can decode safely."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils

from eval import rle


def column_major_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a mask read column by column, starting with a (possibly empty) background run."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def c_decoder(counts: bytes) -> list[int] | str:
    """pycocotools' ``rleFrString`` rewritten char by char: runs as C unsigned ints, or why it fails."""
    if any(not 0 <= byte - 48 <= 63 for byte in counts):
        return "alphabet"
    if counts and (counts[-1] - 48) & 0x20:
        return "truncated"
    runs: list[int] = []
    position, too_long = 0, False
    while position < len(counts):
        value, k, more = 0, 0, True
        while more:
            c = counts[position] - 48
            value |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            position, k = position + 1, k + 1
            if not more and c & 0x10:
                value |= -1 << (5 * k)
        too_long |= k > 6
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value % 2**32)
    return "too long" if too_long else runs


masks = st.integers(1, 12).flatmap(lambda h: st.integers(1, 12).flatmap(lambda w: arrays(np.bool_, (h, w))))


@settings(max_examples=150, deadline=None)
@given(masks)
def test_encode_decode_round_trip_and_runs(mask: np.ndarray) -> None:
    encoded = rle.encode(mask)
    assert encoded["size"] == list(mask.shape) and isinstance(encoded["counts"], str)
    assert np.array_equal(rle.decode(encoded), mask)
    assert rle.area(encoded) == int(mask.sum())
    assert c_decoder(rle.to_pycoco(encoded)["counts"]) == column_major_runs(mask)
    assert np.array_equal(rle.decode({"size": list(mask.shape), "counts": column_major_runs(mask)}), mask)


def test_encode_treats_any_nonzero_as_foreground() -> None:
    mask = np.array([[0, 255], [1, 0]], dtype=np.uint8)
    assert np.array_equal(rle.decode(rle.encode(mask)), mask != 0)
    with pytest.raises(ValueError, match="HxW"):
        rle.encode(np.zeros((2, 2, 3)))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.binary(max_size=14).map(lambda b: bytes(48 + x % 72 for x in b)), st.integers(0, 60)),
        min_size=1,
        max_size=6,
    )
)
def test_batch_check_matches_a_char_by_char_decoder(items: list[tuple[bytes, int]]) -> None:
    """Random strings, many in one batch: each verdict, sum and foreground equals the C decoder's, one by one."""
    problems, totals, foreground = rle._check_counts([c for c, _ in items], np.array([p for _, p in items]))
    names = {1: "alphabet", 2: "truncated", 3: "too long"}
    for (counts, pixels), problem, total, area in zip(items, problems, totals, foreground, strict=True):
        runs = c_decoder(counts)
        if isinstance(runs, str):
            assert names.get(int(problem)) == runs
        elif any(run == 0 for run in runs[1:]):
            assert problem == 4
        else:
            assert total == sum(runs)
            assert problem == (0 if sum(runs) == pixels else 5)
            if problem == 0:
                assert area == sum(runs[1::2])


def test_validate_many_names_every_bad_position() -> None:
    good = rle.encode(np.eye(4, dtype=bool))
    bad_sum = {"size": [4, 5], "counts": good["counts"]}
    with pytest.raises(rle.InvalidRLE) as caught:
        rle.validate_many([good, bad_sum, good, {"size": [4, 4]}])
    assert caught.value.positions == [1, 3]
    assert "run lengths sum to 16, expected height*width = 20" in str(caught.value)
    assert len(rle.validate_many([good, good])) == 2


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        ("not a dict", "must be an object"),
        ({"size": [2, 2]}, "must be an object"),
        ({"size": [2], "counts": "4"}, "two positive integers"),
        ({"size": [0, 2], "counts": ""}, "two positive integers"),
        ({"size": [2, True], "counts": "4"}, "two positive integers"),
        ({"size": [2, 2], "counts": 4}, "ASCII string"),
        ({"size": [2, 2], "counts": "é"}, "ASCII string"),
        ({"size": [2, 2], "counts": [1, -1, 4]}, "non-negative integers"),
        ({"size": [2, 2], "counts": [1, 2]}, "sum to 3"),
        ({"size": [2, 2], "counts": "3"}, "sum to 3"),
        ({"size": [2, 2], "counts": "4 "}, "alphabet"),
        ({"size": [2, 2], "counts": "4P"}, "middle of a run"),
        ({"size": [2, 2], "counts": "PPPPPP0"}, "too long"),
        ({"size": [2, 2], "counts": ""}, "sum to 0"),
        ({"size": [50000, 50000], "counts": "0"}, "too large"),
    ],
)
def test_validate_rejects(mask: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rle.validate(mask)  # type: ignore[arg-type]


def test_zero_length_run_that_crashes_pycocotools_merge_is_rejected() -> None:
    """Runs summing to h*w with zero-length runs in between overflow ``merge``'s buffer in C."""
    crafted = mask_utils.frPyObjects({"size": [2, 2], "counts": [1] + [0] * 50 + [3]}, 2, 2)
    with pytest.raises(ValueError, match="zero-length run"):
        rle.validate({"size": [2, 2], "counts": crafted["counts"].decode()})
    # The same runs given uncompressed are the same mask: their empty runs are merged away.
    cleaned = rle.validate({"size": [2, 2], "counts": [1] + [0] * 50 + [3]})
    assert np.array_equal(mask_utils.decode(cleaned), np.array([[0, 1], [1, 1]], dtype=np.uint8))


def test_uncompressed_with_leading_empty_run() -> None:
    assert np.array_equal(rle.decode({"size": [1, 3], "counts": [0, 2, 1]}), [[True, True, False]])


def test_areas_of_more_than_255_masks() -> None:
    """pycocotools' own ``area`` fails on lists past 255 items under NumPy 2; ``areas`` batches."""
    cocos = [rle.to_pycoco(rle.encode(np.arange(12).reshape(3, 4) < i % 13)) for i in range(600)]
    assert rle.areas(cocos).tolist() == [min(i % 13, 12) for i in range(600)]


@settings(max_examples=40, deadline=None)
@given(st.lists(masks, min_size=1, max_size=30), st.integers(0, 2**32 - 1))
def test_validation_areas_equal_pycocotools_areas(drawn: list[np.ndarray], seed: int) -> None:
    """Random, empty and full masks, compressed and uncompressed, in one call: the areas the check finds
    are pycocotools' ``area`` and the pixel counts."""
    rng = np.random.default_rng(seed)
    shapes = [m.shape for m in drawn]
    drawn += [np.zeros(shapes[0], bool), np.ones(shapes[-1], bool)]
    given_masks = [
        {"size": list(m.shape), "counts": column_major_runs(m)} if rng.random() < 0.5 else rle.encode(m) for m in drawn
    ]
    cocos, areas = rle.validate_with_areas(given_masks)
    assert areas.dtype == np.int64
    assert areas.tolist() == rle.areas(cocos).tolist() == [int(m.sum()) for m in drawn]


def test_validation_areas_across_batches() -> None:
    """Masks at 480x640 fill several of the check's batches; every area still equals pycocotools'."""
    rng = np.random.default_rng(1)
    drawn = [rng.random((480, 640)) < rng.random() * (i % 3) for i in range(120)]
    drawn[5] = np.ones((480, 640), bool)
    cocos, areas = rle.validate_with_areas([rle.encode(m) for m in drawn])
    assert sum(len(c["counts"]) for c in cocos) > 4 * rle._BATCH_CHARS
    assert areas.tolist() == rle.areas(cocos).tolist() == [int(m.sum()) for m in drawn]
