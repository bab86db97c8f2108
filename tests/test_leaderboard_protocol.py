"""The declared protocol: validated on submit, stored, shown, filtered on, flagged when the
checkpoint was chosen on the test split; and the same fields on the published numbers."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
from test_leaderboard_support import predictions_file, shifted

from leaderboard import Leaderboard, SubmissionRejected
from leaderboard.__main__ import main
from leaderboard.reported import REPORTED_RESULTS
from leaderboard.submission import clean_params
from leaderboard.table import TEST_SELECTION_FLAG, format_params

pytest_plugins = ["test_leaderboard_support"]


@pytest.fixture
def declared(board, truth, tmp_path) -> Leaderboard:
    """Three submissions declaring different protocols; the middle one chose its checkpoint on test."""
    submissions = [
        (1, "zero", dict(protocol="zero-shot", checkpoint_selection="validation", params="7B")),
        (2, "tuned", dict(protocol="fine-tuned", checkpoint_selection="test", trained_on="ReasonSeg train")),
        (3, "plain", {}),
    ]
    for shift, model, fields in submissions:
        path = predictions_file(tmp_path / f"{model}.jsonl", shifted(truth, shift))
        board.submit(path, model_name=model, user="ann", **fields)
    return board


def test_declared_fields_are_stored_returned_and_in_the_csv(board, truth, tmp_path):
    result = board.submit(
        predictions_file(tmp_path / "p.jsonl", shifted(truth, 1)),
        model_name="m",
        user="ann",
        protocol=" Fine-Tuned ",
        trained_on="ReasonSeg train + LLM-Seg40K train",
        checkpoint_selection="last",
        params="1.3B",
        code="https://github.com/example/m",
        paper="https://arxiv.org/abs/2404.08767",
    )
    assert (result.protocol, result.checkpoint_selection, result.params) == ("fine-tuned", "last", 1.3e9)
    assert (result.trained_on, result.code, result.paper) == (
        "ReasonSeg train + LLM-Seg40K train",
        "https://github.com/example/m",
        "https://arxiv.org/abs/2404.08767",
    )
    (row,) = pd.read_csv(board.to_csv(tmp_path / "t.csv")).query("not baseline").to_dict("records")
    assert (row["protocol"], row["checkpoint_selection"], row["params"]) == ("fine-tuned", "last", 1.3e9)
    assert (row["trained_on"], row["code"]) == ("ReasonSeg train + LLM-Seg40K train", "https://github.com/example/m")


def test_a_submission_that_declares_nothing_gets_other_and_unknown(board, truth, tmp_path):
    result = board.submit(predictions_file(tmp_path / "p.jsonl", truth), model_name="m", user="ann")
    assert (result.protocol, result.checkpoint_selection) == ("other", "unknown")
    assert (result.trained_on, result.params, result.code, result.paper) == (None, None, None, None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"protocol": "few-shot"}, "the protocol 'few-shot' is not one of zero-shot, fine-tuned, other: pick one"),
        ({"checkpoint_selection": "best"}, "the checkpoint selection 'best' is not one of validation, last, test"),
        ({"params": "lots"}, "the parameter count 'lots' is not a positive number: write e.g. 7e9"),
        ({"params": -7}, "is not a positive number"),
        ({"code": "github.com/x"}, "the code link 'github.com/x' is not an http\\(s\\) URL"),
        ({"paper": "ftp://x.org/p.pdf"}, "the paper link 'ftp://x.org/p.pdf' is not an http\\(s\\) URL"),
        ({"trained_on": "a\x00b"}, "the training-data description contains control characters"),
        ({"trained_on": "x" * 301}, "the training-data description has 301 characters: keep it to 300"),
    ],
)
def test_a_bad_declaration_is_refused_in_one_sentence_and_stores_nothing(board, truth, tmp_path, fields, message):
    with pytest.raises(SubmissionRejected, match=message) as error:
        board.submit(predictions_file(tmp_path / "p.jsonl", truth), model_name="m", user="ann", **fields)
    assert "\n" not in str(error.value)
    with sqlite3.connect(board.settings.db_path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM submissions").fetchone() == (0,)
    assert [r["error"] for r in board._store.rejections()] == [str(error.value)]


@pytest.mark.parametrize(
    ("text", "count"),
    [("7B", 7e9), ("7b", 7e9), ("350M", 3.5e8), ("1.3e9", 1.3e9), (" 13 B ", 1.3e10), ("1,000,000", 1e6), (7, 7.0)],
)
def test_parameter_counts_read_as_people_write_them(text, count):
    assert clean_params(text) == count


@pytest.mark.parametrize("value", [0, float("nan"), float("inf"), True, "7X", "B", "1e400"])
def test_parameter_counts_that_are_not_counts_are_refused(value):
    with pytest.raises(SubmissionRejected, match="is not a positive number"):
        clean_params(value)


def test_table_filters_on_protocol_and_checkpoint_selection_keeping_baselines(declared):
    full = declared.table(markdown=False)
    assert set(full[~full["baseline"]]["model"]) == {"zero", "tuned", "plain"}
    zero = declared.table(markdown=False, protocols=["zero-shot"])
    assert zero[~zero["baseline"]]["model"].tolist() == ["zero"]
    assert zero[~zero["baseline"]]["rank"].tolist() == [1]  # ranked among the rows kept
    assert sorted(zero[zero["baseline"]]["model"]) == ["empty", "oracle"]
    chosen = declared.table(markdown=False, checkpoint_selections=["validation", "unknown"])
    assert set(chosen[~chosen["baseline"]]["model"]) == {"zero", "plain"}
    both = declared.table(markdown=False, protocols=["fine-tuned", "other"], checkpoint_selections=["test"])
    assert both[~both["baseline"]]["model"].tolist() == ["tuned"]
    assert declared.table(markdown=False, protocols=[])["baseline"].all()
    assert set(declared.plot_data(protocols=["zero-shot"])["model"]) == {"zero", "empty", "oracle"}
    with pytest.raises(ValueError, match="cannot filter on the protocol 'few-shot': use zero-shot, fine-tuned, other"):
        declared.table(protocols=["few-shot"])


def test_a_checkpoint_chosen_on_test_is_allowed_and_flagged(declared, tmp_path, capsys):
    shown = declared.table().set_index("model")
    assert shown.loc["tuned", "checkpoint_selection"] == TEST_SELECTION_FLAG
    assert shown.loc["zero", "checkpoint_selection"] == "validation"
    assert shown.loc["zero", "params"] == "7B"
    plain = declared.table(markdown=False).set_index("model")
    assert plain.loc["tuned", "checkpoint_selection"] == "test"  # the CSV keeps the raw value
    assert main(["show", "--db", str(declared.settings.db_path), "--data", declared.settings.data]) == 0
    assert "flagged: checkpoint chosen on the test split: tuned" in capsys.readouterr().out


def test_code_and_paper_are_links_in_the_ui_table(board, truth, tmp_path):
    board.submit(
        predictions_file(tmp_path / "p.jsonl", truth),
        model_name="m",
        user="ann",
        code="https://github.com/x/y",
        paper="https://arxiv.org/abs/1",
    )
    row = board.table().query("not baseline").iloc[0]
    assert (row["code"], row["paper"]) == ("[code](https://github.com/x/y)", "[paper](https://arxiv.org/abs/1)")


def test_the_cli_records_the_declaration(split_dir, truth, tmp_path, capsys):
    path = predictions_file(tmp_path / "p.jsonl", shifted(truth, 1))
    args = ["submit", str(path), "--model-name", "m", "--user", "u", "--db", str(tmp_path / "lb.sqlite")]
    args += ["--data", str(split_dir), "--json", "--protocol", "zero-shot", "--checkpoint-selection", "last"]
    args += ["--params", "7e9", "--trained-on", "LLM-Seg40K train", "--paper", "https://arxiv.org/abs/2404.08767"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["protocol"], result["checkpoint_selection"], result["params"]) == ("zero-shot", "last", 7e9)
    assert (result["trained_on"], result["paper"]) == ("LLM-Seg40K train", "https://arxiv.org/abs/2404.08767")
    assert main([*args[:-2], "--params", "many"]) == 2
    assert "is not a positive number" in json.loads(capsys.readouterr().out)["error"]


def test_format_params():
    assert [format_params(v) for v in (7e9, 1.3e10, 3.5e8, 1.2e12, 5e3, 12, None)] == [
        "7B",
        "13B",
        "350M",
        "1.2T",
        "5K",
        "12",
        None,
    ]


def test_published_numbers_carry_the_protocol_fields_only_where_the_row_says_them(board):
    reported = board.reported_table().set_index("method")
    for column in ("protocol", "trained_on", "checkpoint_selection", "params", "code", "paper"):
        assert column in reported.columns
    assert reported.loc["LISA-7B (zero-shot)", "protocol"] == "zero-shot"
    assert reported.loc["LISA-13B (ft)", "protocol"] == "fine-tuned"
    assert reported.loc["LISA-13B (ft)", "params"] == 13e9
    assert reported.loc["X-SAM", "protocol"] == "unknown"  # the row does not say: not guessed
    assert (reported["checkpoint_selection"] == "unknown").all()
    assert reported.loc["LLM-Seg, 10 ep", "paper"] == "https://arxiv.org/abs/2404.08767"
    assert pd.isna(reported.loc["OVSeg", "paper"])  # measured by the LISA paper: not OVSeg's own paper
    for result in REPORTED_RESULTS:  # a protocol is declared only where the method's label says it
        label = result.method.lower() + " " + result.remark
        expected = "zero-shot" if "zero-shot" in label else "fine-tuned" if "(ft)" in label else "unknown"
        assert result.protocol == expected, result.method
