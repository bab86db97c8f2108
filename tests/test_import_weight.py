"""The judge's layers start light: what importing them pulls in, checked in a fresh interpreter.

A leaderboard-only Space restarts often and ``python -m eval`` is timed from process start
(``bench/eval_speed.py``), so the slow libraries must stay out until an option needs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "gradio", "datasets", "pandas", "cv2", "transformers", "matplotlib")


def _imported_after(statement: str) -> list[str]:
    script = f"import json, sys; {statement}; print(json.dumps(sorted(set({HEAVY!r}) & set(sys.modules))))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "statement",
    [
        "import eval.__main__, eval.evaluate, eval.groundtruth, eval.cache, eval.contract",
        "from leaderboard import Leaderboard, LeaderboardSettings",
    ],
)
def test_importing_the_judge_pulls_in_no_heavy_library(statement: str) -> None:
    assert _imported_after(statement) == []
