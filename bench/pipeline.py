"""Per-stage time of ``Segmenter.segment`` and the speed-up of asking again about the same image.

Model: a preset (default ``tiny``: random weights, so only time is meaningful). Images and
questions: ``shapes`` validation samples. Per image, in the same run:
- ``first``: a first question (nothing cached: proposals, DINOv2, vision tower, LM, selection);
- ``repeat``: further questions about the same image, served from the per-image cache;
- ``uncached``: the same further questions with the cache off (the reference: what every
  question costs without the cache).
The speed-up is the median ``uncached`` time over the median ``repeat`` time. One warm-up call
runs first. Prints a table and writes ``bench/results/pipeline.json``.

    .venv/bin/python bench/pipeline.py [--preset tiny] [--images 20] [--questions 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmseg.data.shapes.generate import generate_sample  # noqa: E402
from llmseg.data.shapes.render import render  # noqa: E402
from llmseg.model.llmseg import LLMSeg  # noqa: E402
from llmseg.pipeline import Segmenter  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"
STAGES = ("prepare", "proposals", "region_features", "image_tokens", "vlm", "selection", "total")


def workload(images: int, questions: int) -> list[tuple[np.ndarray, list[str]]]:
    """``images`` shapes scenes, each with ``questions`` questions (its own, then other samples')."""
    samples = [generate_sample(0, "validation", index) for index in range(images + questions)]
    queries = [generated.question.text for generated in samples]
    return [
        (render(samples[index].scene), [queries[(index + offset) % len(queries)] for offset in range(questions)])
        for index in range(images)
    ]


def median_ms(rows: list[dict[str, float]], stage: str) -> float:
    return 1000 * statistics.median(row[stage] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--questions", type=int, default=4, help="questions per image (the first is uncached)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps shared CPUs from thrashing)")
    args = parser.parse_args()
    if args.questions < 2:
        parser.error("--questions must be at least 2 (one first question, then repeats)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = LLMSeg.from_pretrained(args.preset)
    cached, uncached = Segmenter(model, cache_size=args.images), Segmenter(model, cache_size=0)
    work = workload(args.images, args.questions)
    cached.segment(work[-1][0], work[-1][1][0])  # warm-up (lazy initialisation), then forget it
    cached.clear_cache()

    first, repeat, reference = [], [], []
    start = time.perf_counter()
    for image, queries in work:
        first.append(cached.segment(image, queries[0]).timings)
        for query in queries[1:]:
            repeat.append(cached.segment(image, query).timings)
            reference.append(uncached.segment(image, query).timings)
    elapsed = time.perf_counter() - start

    table = {
        name: {stage: round(median_ms(rows, stage), 3) for stage in STAGES}
        for name, rows in (("first", first), ("repeat", repeat), ("uncached", reference))
    }
    speedup = median_ms(reference, "total") / median_ms(repeat, "total")
    print(f"preset {args.preset}, {args.images} images x {args.questions} questions, {args.threads} thread(s)")
    print(f"{'stage (median ms)':<18}" + "".join(f"{name:>11}" for name in table))
    for stage in STAGES:
        print(f"{stage:<18}" + "".join(f"{table[name][stage]:>11.2f}" for name in table))
    print(f"repeated question: {speedup:.1f}x faster with the cache than without (target >= 5x)")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "preset": args.preset,
                "images": args.images,
                "questions_per_image": args.questions,
                "threads": args.threads,
                "median_ms": table,
                "repeat_speedup": round(speedup, 2),
                "wall_seconds": round(elapsed, 2),
                "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.machine()},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(RESULTS.parents[2])}")


if __name__ == "__main__":
    main()
