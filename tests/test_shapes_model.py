"""The committed `shapes` model: its evaluation report is what the commands in its README give."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "llmseg" / "presets" / "shapes"


def run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True, check=True)


@pytest.mark.slow
def test_predict_then_eval_reproduces_the_committed_test_report(tmp_path):
    committed = json.loads((WEIGHTS / "test_report.json").read_text())
    predictions = tmp_path / "shapes-test.jsonl"
    run(
        "-m",
        "llmseg",
        "predict",
        "--preset",
        "shapes",
        "--data",
        "data/shapes-mini-heldout",
        "--split",
        "test",
        "--out",
        str(predictions),
    )
    report = json.loads(
        run("-m", "eval", str(predictions), "--data", "data/shapes-mini-heldout", "--split", "test", "--json").stdout
    )
    assert report["n"] == committed["n"] == 200
    assert report["giou"] == pytest.approx(committed["giou"], abs=1e-9)
    assert report["ciou"] == pytest.approx(committed["ciou"], abs=1e-9)
    for tag, scores in committed["by_tag"].items():
        assert report["by_tag"][tag]["giou"] == pytest.approx(scores["giou"], abs=1e-9), tag


def test_the_model_folder_documents_how_it_was_made():
    card = (WEIGHTS / "README.md").read_text()
    seed = json.loads((WEIGHTS / "train_config.json").read_text())["seed"]
    assert "python -m llmseg train --preset shapes" in card and f"seed {seed}" in card
    assert "--anchors" in card and "shapes-first-edition.json" in card  # all three stages
    for name in ("metrics.csv", "training.png", "train_config.json", "validation_report.json", "test_report.json"):
        assert (WEIGHTS / name).is_file(), name
