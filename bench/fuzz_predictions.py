"""A long fuzz run of the judge: 10,000+ mutated predictions files, every one must score or be refused cleanly.

The generator is ``tests/predictions_fuzz.py`` (the one ``tests/test_eval_fuzz.py`` runs, bounded,
under hypothesis), seeded file by file here. For every file:
  * parsing (``eval.read_predictions``) in this process, with a 10 s alarm (a hang);
  * the leaderboard's parser (``leaderboard.submission.parse_predictions``): scored or
    ``SubmissionRejected``, never anything else;
  * scoring of every file that parses, in subprocesses of 1,000 files each (scoring reaches
    pycocotools' C code: a crash kills the subprocess, whose last line names the file);
  * ``python -m eval`` on a sample of files: exit 0, or exit 2 with one ``error:`` line;
  * ``Leaderboard.submit`` on a sample: scored, or rejected leaving no pending row and not counted.
Counts go to ``bench/results/fuzz_predictions.json``.

    .venv/bin/python bench/fuzz_predictions.py [--files 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path[:0] = [str(ROOT), str(TESTS)]

from predictions_fuzz import mutated_file, parse_outcome, tiny_split  # noqa: E402

from leaderboard.submission import SubmissionRejected, parse_predictions  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fuzz_predictions.json"
HANG_S = 10
CHUNK = 1000


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hang


def _score_in_subprocesses(files: list[Path], folder: Path, counts: Counter, failures: list[str]) -> None:
    for start in range(0, len(files), CHUNK):
        chunk = folder / f"chunk-{start // CHUNK:03d}"
        chunk.mkdir()
        for path in files[start : start + CHUNK]:
            path.rename(chunk / path.name)
        try:
            done = subprocess.run(
                [sys.executable, str(TESTS / "predictions_fuzz.py"), str(chunk)],
                capture_output=True,
                text=True,
                timeout=HANG_S * CHUNK // 10,
                env={"PYTHONPATH": f"{ROOT}:{TESTS}", "PATH": "/usr/bin:/bin"},
                check=False,
            )
        except subprocess.TimeoutExpired:
            counts["scoring_hangs"] += 1
            failures.append(f"scoring {chunk.name} timed out")
            continue
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        if done.returncode != 0:
            counts["scoring_crashes"] += 1
            failures.append(f"scorer died with status {done.returncode} on {lines[-1] if lines else None}")
        for line in lines:
            if "outcome" in line:
                counts[f"scoring_{line['outcome']}"] += 1
                if line["outcome"] == "bad":
                    failures.append(f"{line['file']}: {line['detail']}")


def _cli_sample(paths: list[Path], split: Path, counts: Counter, failures: list[str]) -> None:
    for path in paths:
        done = subprocess.run(
            [sys.executable, "-m", "eval", str(path), "--data", str(split), "--split", "test", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
        )
        clean = done.returncode == 0 or (
            done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
        )
        counts["cli_exit_0" if done.returncode == 0 else "cli_exit_2" if clean else "cli_bad"] += 1
        if not clean:
            failures.append(f"python -m eval on {path.name}: exit {done.returncode}, {done.stderr[-300:]!r}")


def _leaderboard_sample(paths: list[Path], split: Path, folder: Path, counts: Counter, failures: list[str]) -> None:
    from leaderboard import Leaderboard, LeaderboardSettings

    board = Leaderboard(
        LeaderboardSettings.from_env({}, db_path=folder / "lb" / "lb.sqlite", data=str(split), rate_limit_per_day=1)
    )
    for number, path in enumerate(paths):
        try:
            board.submit(path, model_name="fuzz", user=f"user-{number}")
            counts["leaderboard_scored"] += 1
        except SubmissionRejected:
            counts["leaderboard_rejected"] += 1
        except Exception as error:  # noqa: BLE001 - anything else is a finding
            counts["leaderboard_bad"] += 1
            failures.append(f"Leaderboard.submit on {path.name}: {type(error).__name__}: {error}"[:300])
    store = board._store
    pending = store.submissions("pending")
    counts["leaderboard_pending_rows_left"] = len(pending)
    # Every user submitted once, under a limit of one a day: only scored files may have counted.
    counted = len(store.submissions("scored"))
    if counted != counts["leaderboard_scored"] or pending:
        failures.append(f"leaderboard rows: {counted} scored, {len(pending)} pending")


def _split_folder(folder: Path) -> Path:
    """``tiny_split()`` written as a data folder (for the CLI and leaderboard samples)."""
    import numpy as np
    from predictions_fuzz import HEIGHT, WIDTH

    from llmseg.data.writer import Sample, write_dataset

    references, masks = tiny_split()
    ignore = np.zeros((HEIGHT, WIDTH), bool)
    ignore[0] = True
    samples = [
        Sample(i, np.zeros((HEIGHT, WIDTH, 3), np.uint8), i, "?", "", m, "fuzz", tags, ignore if n == 0 else None)
        for n, ((i, m), tags) in enumerate(zip(masks.items(), references.tags, strict=True))
    ]
    write_dataset(folder / "split", {"test": samples}, title="fuzz", description="Tiny split.")
    return folder / "split"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cli-sample", type=int, default=60, help="files also run through python -m eval")
    parser.add_argument("--leaderboard-sample", type=int, default=300, help="files also submitted")
    args = parser.parse_args()
    _, masks = tiny_split()
    counts: Counter = Counter()
    failures: list[str] = []
    signal.signal(signal.SIGALRM, _alarm)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-predictions-") as temporary:
        folder = Path(temporary)
        to_score, kept = [], []
        for number in range(args.files):
            content = mutated_file(random.Random(args.seed * 1_000_003 + number), masks)
            path = folder / f"{number:06d}.jsonl"
            path.write_bytes(content)
            signal.alarm(HANG_S)
            try:
                kind, detail = parse_outcome(content)
                try:
                    parse_predictions(content)
                    counts["leaderboard_parse_ok"] += 1
                except SubmissionRejected:
                    counts["leaderboard_parse_rejected"] += 1
                except Exception as error:  # noqa: BLE001
                    counts["leaderboard_parse_bad"] += 1
                    failures.append(f"parse_predictions on {path.name}: {type(error).__name__}: {error}"[:300])
            except _Hang:
                kind, detail = "hang", f"{path.name} took over {HANG_S} s to parse"
            finally:
                signal.alarm(0)
            counts[f"parse_{kind}"] += 1
            if kind in ("bad", "hang"):
                failures.append(f"{path.name}: {detail}")
            if number < max(args.cli_sample, args.leaderboard_sample):
                kept.append(folder / f"kept-{number:06d}.jsonl")
                kept[-1].write_bytes(content)
            if kind == "parsed":
                to_score.append(path)
            else:
                path.unlink()
        parse_s = time.perf_counter() - began
        _score_in_subprocesses(to_score, folder, counts, failures)
        split = _split_folder(folder)
        _cli_sample(kept[: args.cli_sample], split, counts, failures)
        _leaderboard_sample(kept[: args.leaderboard_sample], split, folder, counts, failures)
    crashes = counts["scoring_crashes"] + counts["parse_bad"] + counts["cli_bad"] + counts["leaderboard_bad"]
    crashes += counts["leaderboard_parse_bad"] + counts["scoring_bad"]
    hangs = counts["parse_hang"] + counts["scoring_hangs"]
    result = {
        "files": args.files,
        "seed": args.seed,
        "crashes_or_unclean": crashes,
        "hangs": hangs,
        "counts": dict(sorted(counts.items())),
        "failures": failures[:50],
        "parse_s": round(parse_s, 1),
        "total_s": round(time.perf_counter() - began, 1),
    }
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    if crashes or hangs:
        sys.exit("error: the judge failed on some files (see failures)")


if __name__ == "__main__":
    main()
