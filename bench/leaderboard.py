"""Time from upload to scored row in the leaderboard, for 200, 1,000 and 5,000-sample files.

For each size a synthetic held-out split (640x480 masks: one to three random ellipses, some
questions without a target, a tenth with an ignore region) is written with the project's dataset
writer into a temporary folder, with a predictions file of jittered copies. Timed:
  * submit: ``Leaderboard.submit`` from the file's path to the returned scored row (size check,
    parse, pending row + raw file, ``eval.evaluate`` with its 1000 bootstrap resamples, scored row);
  * bare eval, the reference in the same run: ``read_predictions`` + ``evaluate`` on the same
    ``References``, i.e. what ``python -m eval`` does once its data is loaded;
  * start: opening the leaderboard on that split (load, decode ground truth, fingerprint);
  * compare: ``Leaderboard.compare`` of the first two submissions with ``--resamples`` paired
    bootstrap resamples and sign-flip permutations, overall and per tag (reading the stored
    per-sample counts included), against the reference in the same run: the same statistics
    with a plain Python loop over resamples (numpy within each resample), which must agree.
Prints the figures and writes ``bench/results/leaderboard.json``.

    .venv/bin/python bench/leaderboard.py [--sizes 200 1000 5000] [--repeats 3] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval import References, evaluate, read_predictions  # noqa: E402
from eval.metrics import ciou, giou  # noqa: E402
from eval.predictions import write_predictions  # noqa: E402
from leaderboard import Leaderboard, LeaderboardSettings  # noqa: E402
from leaderboard.significance import SampleCounts  # noqa: E402
from llmseg.data.writer import Sample, png_bytes, write_dataset  # noqa: E402

HEIGHT, WIDTH = 480, 640
RESULTS = Path(__file__).resolve().parent / "results" / "leaderboard.json"


def ellipses(rng: np.random.Generator, count: int) -> np.ndarray:
    """An HxW bool mask with ``count`` random filled ellipses."""
    canvas = np.zeros((HEIGHT, WIDTH), np.uint8)
    for _ in range(count):
        centre = (int(rng.integers(40, WIDTH - 40)), int(rng.integers(40, HEIGHT - 40)))
        axes = (int(rng.integers(10, 120)), int(rng.integers(10, 90)))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    return canvas.astype(bool)


def build(folder: Path, n: int, seed: int) -> tuple[Path, list[Path]]:
    """Write an ``n``-sample split under ``folder``; return it and three distinct predictions files."""
    rng = np.random.default_rng(seed)
    image = png_bytes(np.full((HEIGHT, WIDTH, 3), 127, np.uint8))  # scoring never reads images
    samples, truths = [], {}
    for i in tqdm(range(n), desc=f"synthetic split ({n})", leave=False):
        truth = ellipses(rng, int(rng.integers(1, 4))) if rng.random() > 0.05 else np.zeros((HEIGHT, WIDTH), bool)
        ignore = ellipses(rng, 1) if rng.random() < 0.1 else None
        sample_id = f"s{i:05d}"
        truths[sample_id] = truth
        tags = ["no-target"] if not truth.any() else (["long"] if i % 2 else ["short"])
        samples.append(Sample(sample_id, image, f"img{i}", "which one?", "", truth, "bench", tags, ignore))
    split = folder / f"bench-split-{n}"
    write_dataset(split, {"test": samples}, title="leaderboard bench", description="Synthetic split.")
    files = []
    for r in range(3):
        path = folder / f"predictions-{n}-{r}.jsonl"
        write_predictions(
            path,
            ((i, np.roll(m, tuple(rng.integers(-20, 21, size=2)), axis=(0, 1))) for i, m in truths.items()),
        )
        files.append(path)
    return split, files


def loop_comparison(a: SampleCounts, b: SampleCounts, n_resamples: int, seed: int) -> dict[str, list[float] | float]:
    """The reference: the paired bootstrap and the sign-flip test one resample at a time."""
    n = len(a)
    rng = np.random.default_rng(seed)
    giou_draws, ciou_draws = [], []
    for _ in range(n_resamples):
        index = rng.integers(0, n, size=n)
        ia, ua, ib, ub = a.intersection[index], a.union[index], b.intersection[index], b.union[index]
        giou_draws.append(giou(ia, ua) - giou(ib, ub))
        ciou_draws.append(ciou(ia, ua) - ciou(ib, ub))
    observed_giou = giou(a.intersection, a.union) - giou(b.intersection, b.union)
    observed_ciou = ciou(a.intersection, a.union) - ciou(b.intersection, b.union)
    rng = np.random.default_rng((seed, 1))
    extreme_giou = extreme_ciou = 0
    for _ in range(n_resamples):
        words = rng.integers(0, 2**64, size=-(-n // 64), dtype=np.uint64)
        swap = np.unpackbits(words.view(np.uint8), count=n, bitorder="little").astype(bool)
        ia, ua = np.where(swap, b.intersection, a.intersection), np.where(swap, b.union, a.union)
        ib, ub = np.where(swap, a.intersection, b.intersection), np.where(swap, a.union, b.union)
        extreme_giou += abs(giou(ia, ua) - giou(ib, ub)) >= abs(observed_giou) * (1 - 1e-12)
        extreme_ciou += abs(ciou(ia, ua) - ciou(ib, ub)) >= abs(observed_ciou) * (1 - 1e-12)
    return {
        "giou_ci95": list(np.percentile(giou_draws, [2.5, 97.5])),
        "ciou_ci95": list(np.percentile(ciou_draws, [2.5, 97.5])),
        "giou_p": (1 + extreme_giou) / (1 + n_resamples),
        "ciou_p": (1 + extreme_ciou) / (1 + n_resamples),
    }


def loop_compare_all(a: SampleCounts, b: SampleCounts, tags: list[list[str]], n_resamples: int) -> dict:
    """The reference over every subset compare reports: overall, then each tag's samples."""
    result = loop_comparison(a, b, n_resamples, seed=0)
    result["by_tag"] = {}
    for tag in sorted({tag for sample_tags in tags for tag in sample_tags}):
        rows = np.array([tag in sample_tags for sample_tags in tags])
        result["by_tag"][tag] = loop_comparison(a.subset(rows), b.subset(rows), n_resamples, seed=0)
    return result


def agree(compared: dict, looped: dict) -> bool:
    """Same intervals (to rounding) and the same p-values, overall and per tag."""
    rows = [(compared, looped)] + [(compared["by_tag"][tag], row) for tag, row in looped["by_tag"].items()]
    return all(
        np.allclose(mine[f"{m}_ci95"], theirs[f"{m}_ci95"], rtol=0, atol=1e-9) and mine[f"{m}_p"] == theirs[f"{m}_p"]
        for mine, theirs in rows
        for m in ("giou", "ciou")
    )


def measure(n: int, repeats: int, folder: Path, resamples: int) -> dict[str, float]:
    split, files = build(folder, n, seed=n)
    settings = LeaderboardSettings.from_env({}, db_path=folder / f"db-{n}" / "lb.sqlite", data=str(split))
    start = time.perf_counter()
    board = Leaderboard(settings)
    start_s = time.perf_counter() - start
    references = References.from_data(str(split), "test")
    submit_times, eval_times, ids, counts = [], [], [], []
    for r in range(max(repeats, 2)):
        path = files[r % len(files)]
        began = time.perf_counter()
        result = board.submit(path, model_name=f"bench-{r}", user=f"bench-user-{r}")
        submit_times.append(time.perf_counter() - began)
        began = time.perf_counter()
        report = evaluate(read_predictions(path), references)
        eval_times.append(time.perf_counter() - began)
        if (result.giou, result.ciou) != (report.giou, report.ciou):
            sys.exit(f"error: the leaderboard and eval disagree on {path.name}")
        ids.append(result.id)
        counts.append(SampleCounts(report.per_sample["intersection"], report.per_sample["union"]))
    compare_s, loop_s = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        compared = board.compare(ids[0], ids[1], n_resamples=resamples, seed=0)
        compare_s.append(time.perf_counter() - began)
        began = time.perf_counter()
        looped = loop_compare_all(counts[0], counts[1], references.tags, resamples)
        loop_s.append(time.perf_counter() - began)
        if not agree(compared, looped):
            sys.exit(f"error: compare and the reference loop disagree at {n} samples")
    submit_s, eval_s = min(submit_times), min(eval_times)
    return {
        "samples": n,
        "file_mb": round(files[0].stat().st_size / 2**20, 3),
        "submit_s": round(submit_s, 4),
        "bare_eval_s": round(eval_s, 4),
        "overhead_ratio": round(submit_s / eval_s, 3),
        "start_s": round(start_s, 3),
        "compare_resamples": resamples,
        "compare_tags": len(compared["by_tag"]),
        "compare_s": round(min(compare_s), 4),
        "compare_loop_s": round(min(loop_s), 4),
        "compare_speedup": round(min(loop_s) / min(compare_s), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 5000])
    parser.add_argument("--repeats", type=int, default=3, help="best of N submissions (and comparisons) per size")
    parser.add_argument("--resamples", type=int, default=1000, help="resamples per comparison")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="leaderboard-bench-") as temporary:
        for n in args.sizes:
            row = measure(n, args.repeats, Path(temporary), args.resamples)
            rows.append(row)
            print(
                f"{n:>5} samples ({row['file_mb']} MiB): upload -> scored row {row['submit_s']:.3f} s, "
                f"bare eval {row['bare_eval_s']:.3f} s (ratio {row['overhead_ratio']}), start {row['start_s']:.2f} s; "
                f"compare ({args.resamples} resamples, overall + {row['compare_tags']} tags) {row['compare_s']:.3f} s, "
                f"per-resample loop {row['compare_loop_s']:.3f} s ({row['compare_speedup']}x)"
            )
    result = {
        "size": [HEIGHT, WIDTH],
        "repeats": args.repeats,
        "resamples": args.resamples,
        "results": rows,
        "machine": f"{platform.processor() or platform.machine()}, python {platform.python_version()}",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
