"""Speed of ``eval.evaluate`` against a straightforward dense NumPy evaluator, same data, same run.

5,000 synthetic samples at 640x480: ground truths are smooth random blobs (one to a few objects),
predictions are shifted, grown or shrunk copies with stray blobs, some empty; a tenth of the
samples carry an ignore region. Both evaluators start from the same RLE masks (the form
predictions arrive in and ``References`` keep); the dense one decodes every mask and counts
pixels with NumPy. Prints both timings and the ratio and writes ``bench/results/eval_speed.json``.

    .venv/bin/python bench/eval_speed.py [--samples 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval import References, evaluate  # noqa: E402
from eval.rle import encode, to_pycoco  # noqa: E402

HEIGHT, WIDTH = 480, 640
RESULTS = Path(__file__).resolve().parent / "results" / "eval_speed.json"


def blob(rng: np.random.Generator, threshold: float) -> np.ndarray:
    """A smooth random blob mask: coarse Gaussian noise upsampled bicubically, thresholded."""
    noise = rng.standard_normal((rng.integers(3, 6), rng.integers(3, 7))).astype(np.float32)
    return cv2.resize(noise, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC) > threshold


def synthetic_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ground truth, prediction, ignore region or None) for one sample."""
    truth = blob(rng, threshold=rng.uniform(0.8, 1.6))
    kind = rng.random()
    if kind < 0.05:
        prediction = np.zeros_like(truth)
    else:
        dy, dx = rng.integers(-25, 26, size=2)
        prediction = np.roll(truth, (dy, dx), axis=(0, 1))
        kernel = np.ones((7, 7), np.uint8)
        if kind < 0.4:
            prediction = cv2.dilate(prediction.astype(np.uint8), kernel).astype(bool)
        elif kind < 0.7:
            prediction = cv2.erode(prediction.astype(np.uint8), kernel).astype(bool)
        if rng.random() < 0.3:
            prediction |= blob(rng, threshold=2.0)
    ignore = blob(rng, threshold=1.8) if rng.random() < 0.1 else None
    return truth, prediction, ignore


def dense_reference(predictions: dict[str, dict], references: References) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample I and U the obvious way: decode both masks (and the ignore region), count pixels."""
    intersection = np.zeros(len(references), dtype=np.int64)
    union = np.zeros(len(references), dtype=np.int64)
    for i, sample_id in enumerate(references.ids):
        prediction = mask_utils.decode(to_pycoco(predictions[sample_id])).astype(bool)
        truth = mask_utils.decode(references.masks[i]).astype(bool)
        keep = np.ones_like(truth)
        if references.ignores[i] is not None:
            keep = ~mask_utils.decode(references.ignores[i]).astype(bool)
        intersection[i] = np.count_nonzero(prediction & truth & keep)
        union[i] = np.count_nonzero((prediction | truth) & keep)
    return intersection, union


def dense_scores(intersection: np.ndarray, union: np.ndarray) -> tuple[float, float]:
    ious = [i / u if u else 1.0 for i, u in zip(intersection.tolist(), union.tolist(), strict=True)]
    return float(np.mean(ious)), float(intersection.sum() / union.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each evaluator keeps its best")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    ids, masks, ignores, predictions = [], [], [], {}
    for i in range(args.samples):
        truth, prediction, ignore = synthetic_sample(rng)
        ids.append(f"sample-{i:05d}")
        masks.append(to_pycoco(encode(truth)))
        ignores.append(None if ignore is None else to_pycoco(encode(ignore)))
        predictions[ids[-1]] = encode(prediction)
    tags = [["with-ignore"] if ignore is not None else [] for ignore in ignores]
    references = References(ids=ids, sizes=[(HEIGHT, WIDTH)] * len(ids), tags=tags, masks=masks, ignores=ignores)

    # Rounds alternate between the evaluators so both meet the same machine load; each keeps its
    # best round. CPU time of this (single-threaded) process is the figure compared: on a shared
    # machine wall time also counts other processes' turns; wall time is reported beside it.
    runs = {
        "project": lambda: evaluate(predictions, references, n_bootstrap=0),
        "project_with_bootstrap": lambda: evaluate(predictions, references, n_bootstrap=1000),
        "dense": lambda: dense_reference(predictions, references),
    }
    cpu = dict.fromkeys(runs, float("inf"))
    wall = dict.fromkeys(runs, float("inf"))
    outputs = {}
    for _ in range(args.repeats):
        for name, run in runs.items():
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            outputs[name] = run()
            cpu[name] = min(cpu[name], time.process_time() - cpu_start)
            wall[name] = min(wall[name], time.perf_counter() - wall_start)
    report = outputs["project"]
    intersection, union = outputs["dense"]
    dense_giou, dense_ciou = dense_scores(intersection, union)

    identical = (
        np.array_equal(report.per_sample["intersection"].to_numpy(), intersection)
        and np.array_equal(report.per_sample["union"].to_numpy(), union)
        and report.giou == dense_giou
        and report.ciou == dense_ciou
    )
    result = {
        "samples": args.samples,
        "size": [HEIGHT, WIDTH],
        "samples_with_ignore": sum(ignore is not None for ignore in ignores),
        "mean_rle_chars": round(float(np.mean([len(m["counts"]) for m in predictions.values()])), 1),
        "repeats": args.repeats,
        "cpu_s": {name: round(value, 4) for name, value in cpu.items()},
        "wall_s": {name: round(value, 4) for name, value in wall.items()},
        "speedup": round(cpu["dense"] / cpu["project"], 2),
        "speedup_with_bootstrap": round(cpu["dense"] / cpu["project_with_bootstrap"], 2),
        "speedup_wall": round(wall["dense"] / wall["project"], 2),
        "identical": bool(identical),
        "giou": report.giou,
        "ciou": report.ciou,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), python {platform.python_version()}",
    }
    print(f"{args.samples} samples at {WIDTH}x{HEIGHT}, best of {args.repeats} rounds; CPU s (wall s)")
    labels = {"project": "eval.evaluate, no bootstrap", "project_with_bootstrap": "eval.evaluate, 1000-resample CIs"}
    labels["dense"] = "dense NumPy reference"
    for name, label in labels.items():
        print(f"  {label:<34} {cpu[name]:.3f} ({wall[name]:.3f})")
    print(f"  speed-up: {result['speedup']}x ({result['speedup_with_bootstrap']}x with the bootstrap CIs)")
    print(f"  identical numbers: {identical} (gIoU {report.giou:.6f}, cIoU {report.ciou:.6f})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    if not identical:
        sys.exit("error: the two evaluators disagree")


if __name__ == "__main__":
    main()
