"""Fuzzing the judge: mutated predictions files only ever score or get one clean refusal.

Bounded for CI (a fixed number of derandomized examples, each under a deadline). Parsing runs in
this process; every file that parses is then scored in one subprocess, since scoring hands the
masks to pycocotools' C code, where a crash would take the test runner down with it.
``bench/fuzz_predictions.py`` runs the same generator on 10,000+ files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from predictions_fuzz import mutated_file, parse_outcome, tiny_split

SCORER = Path(__file__).resolve().parent / "predictions_fuzz.py"
ROOT = Path(__file__).resolve().parents[1]


def test_mutated_files_score_or_are_refused_cleanly_and_never_crash_pycocotools(tmp_path):
    _, masks = tiny_split()
    parsed: list[bytes] = []
    kinds: dict[str, int] = {}

    @settings(
        max_examples=400,
        deadline=2000,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.randoms(use_true_random=False))
    def parse_cleanly(rnd) -> None:
        content = mutated_file(rnd, masks)
        kind, detail = parse_outcome(content)
        assert kind != "bad", f"{detail} (file starts {content[:120]!r})"
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "parsed":
            parsed.append(content)

    parse_cleanly()
    assert kinds.get("rejected", 0) > 100 and len(parsed) > 30, kinds  # the generator reaches both sides

    for number, content in enumerate(parsed):
        (tmp_path / f"{number:05d}.jsonl").write_bytes(content)
    done = subprocess.run(
        [sys.executable, str(SCORER), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{SCORER.parent}", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, f"the scorer died (status {done.returncode}) on {lines[-1] if lines else None}"
    outcomes = [line for line in lines if "outcome" in line]
    assert len(outcomes) == len(parsed)
    assert [o for o in outcomes if o["outcome"] == "bad"] == []
    assert {o["outcome"] for o in outcomes} == {"scored", "rejected"}  # ids and sizes are checked at scoring
