"""``python -m eval``: table, one JSON object, CSV, and exit 2 with one stderr line for bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eval import rle, write_predictions
from eval.__main__ import main

REPO = Path(__file__).resolve().parents[1]
SHAPE = (5, 7)
TRUTH = {f"img{i}-0": np.arange(35).reshape(SHAPE) < 5 * i for i in range(4)}


@pytest.fixture
def folder(write_split) -> Path:
    return write_split(
        {"validation": [(i, m, None, ["long" if n % 2 else "short"]) for n, (i, m) in enumerate(TRUTH.items())]}
    )


def jsonl(entries: list[dict]) -> str:
    return "".join(json.dumps(entry) + "\n" for entry in entries)


def good_entries() -> list[dict]:
    return [{"id": i, "mask": rle.encode(m)} for i, m in TRUTH.items()]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "eval", *args], capture_output=True, text=True, env=env, cwd=REPO)


def test_json_output_is_exactly_one_object(folder: Path, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    write_predictions(path, TRUTH.items())
    done = run_cli(str(path), "--data", str(folder), "--split", "validation", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # fails on anything but one JSON document
    assert (result["giou"], result["ciou"], result["n"]) == (1.0, 1.0, 4)
    assert set(result["by_tag"]) == {"long", "short"} and result["by_tag"]["long"]["n"] == 2


def test_invalid_file_exits_2_with_one_stderr_line(folder: Path, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(jsonl(good_entries()[:3]))
    done = run_cli(str(path), "--data", str(folder), "--split", "validation")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: the split's id(s) 'img3-0' have no prediction: give one mask per sample"
    ]


def test_table_and_per_sample_csv(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, csv = tmp_path / "p.jsonl", tmp_path / "rows.csv"
    # Each truth is the first 5*n pixels in row order; predict the first 5*n - 2.
    half = {sample_id: np.arange(35).reshape(SHAPE) < 5 * n - 2 for n, sample_id in enumerate(TRUTH)}
    write_predictions(path, half.items())
    code = main([str(path), "--data", str(folder), "--split", "validation", "--per-sample-csv", str(csv), "--nciou"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["subset", "n", "gIoU", "95%"] and "ncIoU" in out
    rows = pd.read_csv(csv)
    assert rows["id"].tolist() == list(TRUTH)
    assert rows["intersection"].tolist() == [0, 3, 8, 13] and rows["union"].tolist() == [0, 5, 10, 15]


def entries_with(change: str) -> str:
    entries = good_entries()
    if change == "not json":
        return jsonl(entries) + "{oops\n"
    if change == "unknown id":
        entries[1]["id"] = "stranger-0"
    elif change == "duplicate id":
        entries.append(entries[0])
    elif change == "missing ids":
        entries = entries[:1]
    elif change == "size":
        entries[2]["mask"] = rle.encode(np.zeros((7, 5), bool))
    elif change == "undecodable":
        entries[0]["mask"] = {"size": list(SHAPE), "counts": "!!"}
    elif change == "run sum":
        entries[3]["mask"] = {"size": list(SHAPE), "counts": [10, 10]}
    return jsonl(entries)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("not json", "line 5 is not valid JSON"),
        ("unknown id", "'stranger-0' are not in the split"),
        ("duplicate id", "duplicate id(s) 'img0-0'"),
        ("missing ids", "'img1-0', 'img2-0', 'img3-0' have no prediction"),
        ("size", "'img2-0' is not at the image's size"),
        ("undecodable", "'img0-0' is not valid RLE: compressed RLE string has a character outside"),
        ("run sum", "'img3-0' is not valid RLE: run lengths sum to 20, expected height*width = 35"),
    ],
)
def test_every_invalid_case_exits_2(
    change: str, message: str, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(entries_with(change))
    assert main([str(path), "--data", str(folder), "--split", "validation", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith("error: ") and message in captured.err


def test_wrong_split_and_public_split_exit_2(write_split, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [(i, m, None, []) for i, m in TRUTH.items()]
    public = write_split({"test": rows}, holdout="test", holdout_dir=tmp_path / "gt")
    path = tmp_path / "p.jsonl"
    path.write_text(jsonl(good_entries()))
    assert main([str(path), "--data", str(public), "--split", "test"]) == 2
    assert "public copy of a held-out split" in capsys.readouterr().err
    assert main([str(path), "--data", str(public), "--split", "nope"]) == 2
    assert "has no split 'nope'" in capsys.readouterr().err
    assert main([str(path), "--data", str(tmp_path / "gt"), "--split", "test"]) == 0
