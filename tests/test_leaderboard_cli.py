"""``python -m leaderboard``: scores exactly as ``python -m eval`` does, rejects with exit 2 and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_leaderboard_support import predictions_file, shifted

from leaderboard.__main__ import main

pytest_plugins = ["test_leaderboard_support"]

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_submit_json_scores_exactly_as_python_m_eval(split_dir, truth, tmp_path):
    path = predictions_file(tmp_path / "p.jsonl", shifted(truth, 2))
    db = tmp_path / "lb.sqlite"
    submitted = _run(
        "leaderboard",
        "submit",
        str(path),
        "--model-name",
        "cli",
        "--user",
        "eve",
        "--db",
        str(db),
        "--data",
        str(split_dir),
        "--json",
    )
    scored = _run("eval", str(path), "--data", str(split_dir), "--split", "test", "--json", "--bootstrap", "1000")
    assert submitted.returncode == 0, submitted.stderr
    assert scored.returncode == 0, scored.stderr
    result, expected = json.loads(submitted.stdout), json.loads(scored.stdout)
    assert result["status"] == "scored" and isinstance(result["id"], int)
    for key in ("giou", "ciou", "n", "by_tag", "ci95"):
        assert result[key] == expected[key], key


def test_rejected_submission_prints_one_json_object_and_exits_2_without_traceback(split_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "q000"}\n')
    completed = _run(
        "leaderboard",
        "submit",
        str(bad),
        "--model-name",
        "m",
        "--user",
        "eve",
        "--db",
        str(tmp_path / "lb.sqlite"),
        "--data",
        str(split_dir),
        "--json",
    )
    assert completed.returncode == 2
    assert json.loads(completed.stdout) == {"status": "rejected", "error": "line 1 (id 'q000') has no \"mask\""}
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"id": "q000", "mask": {"size": [24, 32], "counts": [1' + b"0" * 5000 + b"]}}\n", "line 1 has an integer"),
        (b"[" * 100_000 + b"\n", "line 1 nests JSON too deeply"),
    ],
)
def test_huge_integers_and_deep_nesting_are_rejected_not_errors(split_dir, tmp_path, capsys, content, reason):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    db = ["--db", str(tmp_path / "lb.sqlite"), "--data", str(split_dir)]
    assert main(["submit", str(bad), "--model-name", "m", "--user", "eve", *db, "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["status"] == "rejected" and answer["error"].startswith(reason)


def test_duplicate_is_rejected_and_plain_errors_go_to_stderr(split_dir, truth, tmp_path, capsys):
    path = predictions_file(tmp_path / "p.jsonl", truth)
    common = ["--model-name", "m", "--user", "fay", "--db", str(tmp_path / "lb.sqlite"), "--data", str(split_dir)]
    assert main(["submit", str(path), *common]) == 0
    assert capsys.readouterr().out.startswith("scored submission #1 (m): gIoU 100.00")
    assert main(["submit", str(path), *common, "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["status"] == "rejected" and "already submitted" in answer["error"]
    assert main(["submit", str(path), *common]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: you already submitted")


def test_setup_errors_are_reported_as_errors(tmp_path, capsys):
    args = [
        "submit",
        str(tmp_path / "p.jsonl"),
        "--model-name",
        "m",
        "--user",
        "u",
        "--db",
        str(tmp_path / "lb.sqlite"),
        "--data",
        str(tmp_path / "nowhere"),
        "--json",
    ]
    assert main(args) == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["status"] == "error" and "no dataset" in answer["error"]


def test_show_prints_both_tables_and_writes_csv(split_dir, truth, tmp_path, capsys):
    db = tmp_path / "lb.sqlite"
    for k, user in enumerate(["gus", "gus"]):
        path = predictions_file(tmp_path / f"p{k}.jsonl", shifted(truth, k + 1))
        assert (
            main(
                [
                    "submit",
                    str(path),
                    "--model-name",
                    "twice",
                    "--user",
                    user,
                    "--db",
                    str(db),
                    "--data",
                    str(split_dir),
                ]
            )
            == 0
        )
    capsys.readouterr()
    csv, reported = tmp_path / "t.csv", tmp_path / "r.csv"
    assert (
        main(
            [
                "show",
                "--db",
                str(db),
                "--data",
                str(split_dir),
                "--csv",
                str(csv),
                "--all",
                "--reported-csv",
                str(reported),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "twice" in out and "oracle" in out and "reported, not verified here" in out
    assert pd.read_csv(csv)["model"].tolist().count("twice") == 2
    assert "LISA-7B (ft)" in pd.read_csv(reported)["method"].tolist()
    assert main(["show", "--db", str(db), "--data", str(split_dir), "--csv", str(csv)]) == 0
    assert pd.read_csv(csv)["model"].tolist().count("twice") == 1
