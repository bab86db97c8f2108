"""``llmseg X`` is ``python -m llmseg X``; ``llmseg eval|leaderboard|datagen ...`` are their ``python -m`` forms."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import eval.__main__ as eval_main
from eval import rle, write_predictions
from llmseg.__main__ import console, main

COMMANDS = (
    "predict",
    "prepare",
    "train",
    "convert-official",
    "convert-llmseg40k",
    "convert-reasonseg",
    "make-shapes",
    "shapes-anchors",
)
TRUTH = {f"img{i}": np.arange(35).reshape(5, 7) < 5 * i for i in range(1, 4)}


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: python -m llmseg [-h] COMMAND")
    listed = re.findall(r"^    (\S+)", usage, flags=re.MULTILINE)
    assert listed == [*COMMANDS, "datagen", "eval", "leaderboard"]


def test_the_console_script_names_itself(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["llmseg", "make-shapes", "--help"])
    with pytest.raises(SystemExit):
        console()
    assert capsys.readouterr().out.startswith("usage: llmseg make-shapes")


def test_eval_is_python_m_eval(write_split, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_split({"validation": [(i, m, None, ["short"]) for i, m in TRUTH.items()]})
    path = tmp_path / "p.jsonl"
    write_predictions(path, ((i, rle.encode(np.roll(m, 1, axis=1))) for i, m in TRUTH.items()))
    args = [str(path), "--data", str(folder), "--split", "validation", "--json", "--bootstrap", "10"]
    assert eval_main.main(args) == 0
    direct = json.loads(capsys.readouterr().out)
    assert main(["eval", *args]) == 0
    assert json.loads(capsys.readouterr().out) == direct and direct["n"] == 3


def test_a_forwarded_command_keeps_its_exit_status_and_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    args = [
        "submit",
        str(tmp_path / "p.jsonl"),
        "--model-name",
        "m",
        "--user",
        "u",
        "--db",
        str(tmp_path / "lb.sqlite"),
    ]
    assert main(["leaderboard", *args, "--data", str(missing), "--json"]) == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["status"] == "error" and "no dataset" in answer["error"]
    assert main(["datagen", "ask", "--work", str(missing), "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_the_leaderboard_default_data_outside_the_checkout_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("LLMSEG_LEADERBOARD_DATA", "LLMSEG_LEADERBOARD_BENCHMARKS"):
        monkeypatch.delenv(name, raising=False)
    assert main(["leaderboard", "show"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: the default held-out data data/shapes-mini-heldout is a folder of the project")
    assert "--data" in error and list(tmp_path.iterdir()) == []  # nothing created before the error
