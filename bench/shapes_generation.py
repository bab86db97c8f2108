"""Speed of the `shapes` generator: samples per second, and the time 20,000 training samples take.

Writes ``--samples`` training samples (default 2,000) through ``make_shapes`` once per worker
count, and extrapolates to 20,000. As the reference, in the same run, the same samples already in
memory are written through ``llmseg.data.writer`` alone (parquet rows; the images are PNG bytes
already, as the generator hands them over): the share of the time that is not generation. Prints
the figures and writes ``bench/results/shapes_generation.json``. On a shared machine the wall-clock
rates depend on the load (recorded); samples per CPU second is what an idle core would give.

    .venv/bin/python bench/shapes_generation.py [--samples 2000] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmseg.data.shapes import make_shapes  # noqa: E402
from llmseg.data.shapes.generate import generate_split  # noqa: E402
from llmseg.data.writer import write_dataset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "shapes_generation.json"
TARGET = 20_000


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children: on a shared machine, what an idle core would need."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for workers in args.workers:
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            make_shapes(
                Path(scratch) / f"w{workers}", train=args.samples, validation=0, test=0, seed=args.seed, workers=workers
            )
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
            runs.append(
                {
                    "workers": workers,
                    "seconds": round(seconds, 2),
                    "samples_per_s": round(args.samples / seconds, 1),
                    "seconds_for_20k": round(seconds * TARGET / args.samples, 1),
                    "cpu_seconds": round(cpu, 2),
                    "samples_per_cpu_s": round(args.samples / cpu, 1),
                }
            )
            print(
                f"{workers} worker(s): {runs[-1]['samples_per_s']} samples/s, 20k in {runs[-1]['seconds_for_20k']} s "
                f"({runs[-1]['samples_per_cpu_s']} samples per CPU second)"
            )

        samples = list(generate_split(args.seed, "train", args.samples))
        start = time.perf_counter()
        write_dataset(Path(scratch) / "write-only", {"train": samples}, title="write only", description="reference")
        write_seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in (Path(scratch) / "w1").glob("*.parquet")) if 1 in args.workers else None

    single = next((run for run in runs if run["workers"] == 1), runs[0])
    ratio = single["seconds"] / write_seconds
    print(f"writing the same {args.samples} samples alone: {args.samples / write_seconds:.0f} samples/s")
    print(f"generation + writing takes {ratio:.1f}x the time of writing alone (1 worker)")
    result = {
        "samples": args.samples,
        "runs": runs,
        "reference_write_only": {
            "seconds": round(write_seconds, 2),
            "samples_per_s": round(args.samples / write_seconds, 1),
        },
        "ratio_generate_and_write_over_write_only": round(ratio, 2),
        "bytes_per_sample": None if size is None else round(size / args.samples),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
