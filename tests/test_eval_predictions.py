"""The predictions file: writing, reading back, and a one-sentence error for every kind of bad file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eval import PredictionsError, read_predictions, rle, write_predictions


def line(sample_id: object, mask: object) -> str:
    return json.dumps({"id": sample_id, "mask": mask})


GOOD = rle.encode(np.eye(3, dtype=bool))


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    masks = {"a-0": np.eye(3, dtype=bool), "b-1": np.zeros((2, 4), bool), "c-2": np.full((5, 1), 255, np.uint8)}
    path = tmp_path / "predictions.jsonl"
    write_predictions(path, [("a-0", masks["a-0"]), ("b-1", rle.encode(masks["b-1"])), ("c-2", masks["c-2"])])
    assert len(path.read_text().splitlines()) == 3
    read = read_predictions(path)
    assert list(read) == ["a-0", "b-1", "c-2"]
    for sample_id, mask in masks.items():
        assert np.array_equal(rle.decode(read[sample_id]), mask != 0)
    assert read_predictions(path.read_bytes()) == read


def test_uncompressed_rle_is_read_as_compressed() -> None:
    read = read_predictions(line("x", {"size": [2, 3], "counts": [1, 2, 3]}).encode())
    assert isinstance(read["x"]["counts"], str)
    assert np.array_equal(rle.decode(read["x"]), [[False, True, False], [True, False, False]])


def test_every_mask_is_read_in_canonical_form() -> None:
    """Compressed, uncompressed or with extra keys: each mask comes back as just "size" and a counts string."""
    content = "\n".join(
        [
            line("a", GOOD),
            line("b", {"size": [2, 3], "counts": [1, 2, 3]}),
            line("c", {**GOOD, "score": 0.5}),
        ]
    )
    read = read_predictions(content.encode())
    assert read["a"] == read["c"] == GOOD
    assert read["b"] == rle.encode(np.array([[False, True, False], [True, False, False]]))


def test_a_size_changed_in_place_after_reading_never_reaches_pycocotools() -> None:
    """What ``evaluate`` hands to pycocotools is the checked form, which shares no list with the mask read."""
    from eval.predictions import validated_masks

    read = read_predictions(line("a", GOOD).encode())
    read["a"]["size"][0] = 50_000
    _, cocos, areas = validated_masks(read)
    assert cocos[0]["size"] == [3, 3] and areas.tolist() == [3]


def test_blank_lines_extra_keys_and_a_byte_order_mark_are_fine() -> None:
    content = "\ufeff" + line("a", GOOD) + "\n\n" + json.dumps({"id": "b", "mask": GOOD, "score": 0.3}) + "\n"
    assert list(read_predictions(content.encode())) == ["a", "b"]


def test_write_rejects_duplicate_ids(tmp_path: Path) -> None:
    with pytest.raises(PredictionsError, match="duplicate id 'a'"):
        write_predictions(tmp_path / "p.jsonl", [("a", np.eye(2)), ("a", np.eye(2))])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "holds no predictions"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (f"{line('a', GOOD)}\nnot json\n".encode(), r"line 2 is not valid JSON"),
        (json.dumps([{"id": "a", "mask": GOOD}], indent=1).encode(), "single JSON document, not JSON Lines"),
        (b"[1, 2]\n", "line 1 is not a JSON object"),
        (json.dumps({"mask": GOOD}).encode(), 'line 1 has no "id"'),
        (line(7, GOOD).encode(), 'line 1 has no "id"'),
        (json.dumps({"id": "a"}).encode(), r"line 1 \(id 'a'\) has no \"mask\""),
        (
            "\n".join([line("a", GOOD), line("b", GOOD), line("a", GOOD), line("b", GOOD)]).encode(),
            r"duplicate id\(s\) 'a', 'b': 'a' is on lines 1, 3",
        ),
        (
            "\n".join([line("a", GOOD), line("b", {"size": [3, 4], "counts": GOOD["counts"]})]).encode(),
            r"the mask of id\(s\) 'b' is not valid RLE: run lengths sum to 9, expected height\*width = 12",
        ),
        (line("a", {"size": [2, 2], "counts": "4P"}).encode(), "'a' is not valid RLE: .* middle of a run"),
        (line("a", {"size": [2, 2], "counts": [1, 2]}).encode(), "'a' is not valid RLE: run lengths sum to 3"),
        (line("a", {"size": [2, 2]}).encode(), "'a' is not valid RLE: a mask must be an object with \"size\""),
        (
            "\n".join(line(f"s{i}", {"size": [1, 1], "counts": "9"}) for i in range(5)).encode(),
            r"id\(s\) 's0', 's1', 's2' and 2 more is not valid RLE",
        ),
    ],
)
def test_invalid_files_raise_one_sentence(content: bytes, message: str) -> None:
    with pytest.raises(PredictionsError, match=message) as caught:
        read_predictions(content)
    assert "\n" not in str(caught.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(PredictionsError, match="no predictions file at"):
        read_predictions(tmp_path / "nope.jsonl")
    with pytest.raises(PredictionsError, match="is a folder"):
        read_predictions(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"id": "a", "mask": {"size": [1' + b"0" * 5000 + b', 2], "counts": "0"}}\n',
            "line 1 has an integer of 5001",
        ),
        (b'{"id": "a", "mask": {"size": [2, 2], "counts": [-' + b"9" * 30 + b"]}}\n", "integer of 30 digits"),
        (b"\n" + b"[" * 100_000 + b"\n", "line 2 nests JSON too deeply"),
        (b'{"id": "a", "mask": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n", "line 1 nests JSON too deeply"),
    ],
)
def test_huge_integers_and_deep_nesting_are_refused_by_eval_itself(content: bytes, message: str) -> None:
    with pytest.raises(PredictionsError, match=message) as caught:
        read_predictions(content)
    assert "\n" not in str(caught.value)


def test_crlf_line_numbers_match_an_editor() -> None:
    good = json.dumps({"id": "a", "mask": {"size": [1, 1], "counts": [1]}})
    with pytest.raises(PredictionsError, match="line 3 is not valid JSON"):
        read_predictions(f"{good}\r\n\u2028\r\nnot json\r\n".encode())
