"""Submission checks: every kind of invalid file or metadata is refused with its reason, nothing counts.

Also property-based: random bytes, random JSON and mutated valid files never make the parser (or a
whole submission) raise anything but ``SubmissionRejected``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_leaderboard_support import make_masks, predictions_file, shifted, write_split

from eval import References, evaluate, read_predictions
from eval.rle import encode
from leaderboard import Leaderboard, LeaderboardSettings, SubmissionRejected
from leaderboard.submission import parse_predictions

pytest_plugins = ["test_leaderboard_support"]  # the split, settings and board fixtures


def _lines(entries: list[dict]) -> bytes:
    return "".join(json.dumps(entry) + "\n" for entry in entries).encode()


def _valid_entries(masks: dict[str, np.ndarray]) -> list[dict]:
    return [{"id": sample_id, "mask": encode(mask)} for sample_id, mask in masks.items()]


def test_valid_submission_is_scored_as_the_evaluation_core_scores_it(board, truth, tmp_path):
    path = predictions_file(tmp_path / "p.jsonl", shifted(truth, 1))
    result = board.submit(path, model_name="shifted", user="alice")
    expected = evaluate(read_predictions(path), References.from_data(board.settings.data, board.settings.split))
    assert result.status == "scored"
    assert (result.giou, result.ciou, result.n) == (expected.giou, expected.ciou, expected.n)
    assert result.by_tag == expected.by_tag
    assert result.ci95 == expected.ci95


def _invalid_files(truth: dict[str, np.ndarray]) -> dict[str, tuple[bytes, str]]:
    """(file content, what the rejection must name: the offending id where there is one) per kind of invalid file."""
    valid = _valid_entries(truth)
    bad_counts = dict(valid[1], mask={"size": valid[1]["mask"]["size"], "counts": [3, 4]})
    wrong_size = dict(valid[2], mask=encode(np.zeros((5, 5), dtype=bool)))
    return {
        "empty": (b"", "no predictions"),
        "not utf-8": (b"\xff\xfe\x00garbage", "UTF-8"),
        "not json": (b"this is not json\n", "JSON"),
        "one json document": (json.dumps(valid, indent=2).encode(), "JSON Lines"),
        "not an object": (b"[1, 2]\n", "JSON object"),
        "no id": (_lines([{"mask": valid[0]["mask"]}]), '"id"'),
        "no mask": (_lines([{"id": "q000"}]), '"mask"'),
        "duplicate id": (_lines(valid + [valid[0]]), "duplicate.*'q000'"),
        "bad rle": (_lines([bad_counts if e["id"] == bad_counts["id"] else e for e in valid]), "'q001'"),
        "deep nesting": (b"[" * 100_000, "nest"),
        "huge run lengths": (_lines([{"id": "q000", "mask": {"size": [2**40, 1], "counts": [2**40]}}]), "q000|large"),
        "unknown id": (_lines(valid + [{"id": "other", "mask": valid[0]["mask"]}]), "'other'"),
        "missing id": (_lines(valid[:-1]), "'q007'"),
        "wrong size": (_lines([wrong_size if e["id"] == wrong_size["id"] else e for e in valid]), "'q002'.*size"),
    }


def test_every_kind_of_invalid_file_is_rejected_with_its_reason_and_nothing_counts(truth, lb_settings):
    board = Leaderboard(LeaderboardSettings.from_env({}, **{**_as_kwargs(lb_settings), "rate_limit_per_day": 1}))
    cases = _invalid_files(truth)
    for name, (content, reason) in cases.items():
        with pytest.raises(SubmissionRejected, match=reason) as caught:
            board.submit(content, model_name=name, user="mallory")
        assert "\n" not in str(caught.value), name
    private = board._store
    assert private.submissions() == []
    assert len(private.rejections()) == len(cases)
    assert list(private.blobs_dir.iterdir()) == []
    # none of the refusals counted: the one submission the limit allows still goes through
    assert board.submit(_lines(_valid_entries(truth)), model_name="good", user="mallory").status == "scored"


def _as_kwargs(settings: LeaderboardSettings) -> dict:
    return {"db_path": settings.db_path, "data": settings.data}


def test_size_limit_is_checked_with_a_clear_message(truth, lb_settings, tmp_path):
    board = Leaderboard(LeaderboardSettings.from_env({}, **_as_kwargs(lb_settings), max_upload_mb=0.0001))
    path = predictions_file(tmp_path / "p.jsonl", truth)
    limit = int(0.0001 * 2**20)
    assert path.stat().st_size > limit
    with pytest.raises(SubmissionRejected, match=rf"is {path.stat().st_size} bytes, over the {limit} bytes limit"):
        board.submit(path, model_name="big", user="bob")
    with pytest.raises(SubmissionRejected, match=r"over the"):
        board.submit(path.read_bytes(), model_name="big", user="bob")


def test_missing_path_is_rejected(board, tmp_path):
    with pytest.raises(SubmissionRejected, match="no file at"):
        board.submit(tmp_path / "nothing.jsonl", model_name="m", user="u")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"model_name": "  "}, "model name is empty"),
        ({"user": ""}, "user name is empty"),
        ({"model_name": "x" * 101}, "keep it to 100"),
        ({"model_name": "bad\x00name"}, "control characters"),
        ({"link": "javascript:alert(1)"}, "not an http"),
        ({"link": "ftp://example.org/model"}, "not an http"),
        ({"link": "https://"}, "not an http"),
        ({"link": "http://[::1"}, "not an http"),
        ({"link": "https://example.org/a b"}, "not an http"),
        ({"note": "n" * 1001}, "keep it to 1000"),
    ],
)
def test_bad_metadata_is_rejected(board, truth, fields, reason):
    metadata = {"model_name": "model", "user": "carol", **fields}
    with pytest.raises(SubmissionRejected, match=reason):
        board.submit(_lines(_valid_entries(truth)), **metadata)
    assert board._store.submissions() == []


def test_metadata_is_cleaned(board, truth):
    result = board.submit(
        _lines(_valid_entries(truth)), model_name="  spaced  ", user=" dave ", link=" https://example.org/m ", note=""
    )
    row = board._store.get(result.id)
    assert (row.model_name, row.user, row.link, row.note) == ("spaced", "dave", "https://example.org/m", None)


# Property-based tests. A module-scoped board: hypothesis replays many inputs through one fixture.


@pytest.fixture(scope="module")
def property_board(tmp_path_factory) -> Leaderboard:
    folder = write_split(tmp_path_factory.mktemp("property"), make_masks())
    db = tmp_path_factory.mktemp("property-db") / "lb.sqlite"
    return Leaderboard(LeaderboardSettings.from_env({}, db_path=db, data=str(folder), rate_limit_per_day=10**9))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
MASKS = st.fixed_dictionaries(
    {
        "size": st.lists(st.integers(-2, 2**33) | st.floats() | st.text(max_size=3), max_size=3),
        "counts": st.text(max_size=12) | st.lists(st.integers(-5, 2**34), max_size=6) | JSON_VALUES,
    }
)
LINES = st.lists(
    JSON_VALUES | st.fixed_dictionaries({"id": st.text(max_size=6) | JSON_VALUES, "mask": MASKS | JSON_VALUES}),
    max_size=6,
)


def _parses_or_rejects(content: bytes) -> None:
    try:
        parse_predictions(content)
    except SubmissionRejected:
        pass


@settings(max_examples=150, deadline=None, database=None)
@given(st.binary(max_size=400))
def test_parser_survives_random_bytes(content):
    _parses_or_rejects(content)


@settings(max_examples=150, deadline=None, database=None)
@given(LINES)
def test_parser_survives_random_json(lines):
    _parses_or_rejects("\n".join(json.dumps(line) for line in lines).encode())


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_valid_files_are_scored_or_rejected(property_board, data):
    """Flip, delete, insert and duplicate bytes or lines of a valid file, then submit it."""
    content = bytearray(_lines(_valid_entries(shifted(make_masks(), data.draw(st.integers(0, 3))))))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "delete", "insert", "duplicate-line", "truncate"]))
        at = data.draw(st.integers(0, max(len(content) - 1, 0)))
        if kind == "flip" and content:
            content[at] = data.draw(st.integers(0, 255))
        elif kind == "delete":
            del content[at : at + data.draw(st.integers(1, 20))]
        elif kind == "insert":
            content[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "duplicate-line":
            lines = bytes(content).split(b"\n")
            lines.insert(data.draw(st.integers(0, len(lines))), data.draw(st.sampled_from(lines)))
            content = bytearray(b"\n".join(lines))
        else:
            del content[at:]
    try:
        result = property_board.submit(bytes(content), model_name="mutant", user="fuzzer")
    except SubmissionRejected as error:
        assert str(error)
    else:
        assert result.status == "scored" and 0.0 <= result.giou <= 1.0


def test_read_predictions_and_parser_agree_on_a_valid_file(truth, tmp_path: Path):
    path = predictions_file(tmp_path / "p.jsonl", truth)
    assert parse_predictions(path.read_bytes()) == read_predictions(path)
