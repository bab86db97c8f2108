"""Wall time of the `shapes` model's full-model training stages (1 and 3), as the card runs them.

The model card's budget is "about 2 hours on this 2-core CPU". Stages 1 and 3 train the whole
model, so they dominate it. This script runs each stage's exact settings (the card's commands,
through ``llmseg.train.train``) for the first ``--steps`` steps twice in the same run: once with
``data_workers=0`` (the batches are decoded and collated in the training process, the reference) and
once with ``data_workers=1`` (a worker process does it ahead of the model). It reports the seconds
per step (validations at steps 0 and 250 included, so it slightly overestimates a full stage) and
the stage's minutes extrapolated to its full length, as a ratio between the two settings. It also
checks that the data workers change the time and nothing else: every logged loss and validation
score of the two runs must be equal digit for digit, and for stage 1 equal to the committed run's
``stage1_metrics.csv`` too.

Needs the card's inputs: ``runs/shapes-train``, its prepared proposals and anchors, the
``data/shapes-mini`` and seed-17 validation splits prepared, and the first edition in
``runs/shapes-ft/best`` (see ``llmseg/presets/shapes/README.md``). Run it on an idle machine:

    .venv/bin/python bench/shapes_training_time.py [--steps 500] [--stage3-steps 250]

Writes ``bench/results/shapes_training_time.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmseg.prepare import starting_point  # noqa: E402
from llmseg.train import read_metrics, train, train_config_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRESET_DIR = ROOT / "llmseg" / "presets" / "shapes"
RESULTS = ROOT / "bench" / "results" / "shapes_training_time.json"
RUNS = ROOT / "runs"

# The card's commands: the starting config, the validation split and its prepared proposals, the
# TrainConfig settings the command sets, the stage's full length, and the committed log to match.
STAGES: dict[str, dict[str, Any]] = {
    "stage1": {
        "preset": str(ROOT / "llmseg" / "configs" / "shapes-first-edition.json"),
        "validation_data": str(ROOT / "data" / "shapes-mini"),
        "prepared": str(RUNS / "shapes" / "prepared"),
        "settings": {"torch_threads": 1},
        "full_steps": 10000,
        "committed_metrics": PRESET_DIR / "stage1_metrics.csv",
    },
    "stage3": {
        "preset": "shapes",
        "validation_data": str(RUNS / "shapes-val17"),
        "prepared": str(RUNS / "shapes-anchor" / "prepared"),
        "settings": {
            "torch_threads": 1,
            "init_weights": str(RUNS / "shapes-ft" / "best"),
            "anchors": str(RUNS / "shapes-train-anchors.parquet"),
            "steps": 2000,
            "learning_rate": 2e-4,
            "warmup_steps": 100,
            "new_modules_lr_scale": 10.0,
            "tag_weights": "relation=3,comparative=2,multi-target=2",
        },
        "full_steps": 2000,
        # The committed stage 3 was run on another machine; its floats differ in the 6th digit.
        "committed_metrics": None,
    },
}


def timed_run(
    stage: dict[str, Any], workers: int, steps: int, output: Path
) -> tuple[float, dict[str, list[tuple[int, float]]]]:
    """(wall seconds, logged metrics) of the stage's first ``steps`` steps with ``workers`` data workers."""
    config, _ = starting_point(stage["preset"])
    train_config = train_config_for(config.name, {**stage["settings"], "data_workers": workers})
    start = time.perf_counter()
    train(
        config,
        str(RUNS / "shapes-train"),
        output,
        train_config,
        validation_data=stage["validation_data"],
        prepared_dir=stage["prepared"],
        resume=False,
        stop_after=steps,
    )
    return time.perf_counter() - start, read_metrics(output / "metrics.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="stage 1 steps per run")
    parser.add_argument("--stage3-steps", type=int, default=250, help="stage 3 steps per run")
    args = parser.parse_args()
    inputs = (RUNS / "shapes-train", RUNS / "shapes" / "prepared", RUNS / "shapes-ft" / "best")
    missing = [path for path in inputs if not path.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(map(str, missing))}: run the model card's data commands first")
    results: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as scratch:
        for name, stage in STAGES.items():
            steps = args.steps if name == "stage1" else args.stage3_steps
            runs = {}
            for workers in (0, 1):
                wall, metrics = timed_run(stage, workers, steps, Path(scratch) / f"{name}-w{workers}")
                runs[workers] = {"wall_s": wall, "s_per_step": wall / steps, "metrics": metrics}
                minutes = wall / steps * stage["full_steps"] / 60
                print(f"{name} data_workers={workers}: {steps} steps in {wall:.0f} s, {wall / steps:.3f} s/step "
                      f"-> {stage['full_steps']} steps {minutes:.1f} min")  # fmt: skip
            same = runs[0]["metrics"] == runs[1]["metrics"]
            entry: dict[str, Any] = {
                "steps": steps,
                "full_steps": stage["full_steps"],
                "logged_values": sum(len(series) for series in runs[0]["metrics"].values()),
                "identical_metrics_workers_0_and_1": same,
                "speed_ratio_workers1_over_workers0": runs[0]["s_per_step"] / runs[1]["s_per_step"],
            }
            for workers, run in runs.items():
                entry[f"data_workers_{workers}"] = {
                    "wall_s": round(run["wall_s"], 1),
                    "s_per_step": round(run["s_per_step"], 4),
                    "full_stage_minutes": round(run["s_per_step"] * stage["full_steps"] / 60, 1),
                }
            if stage["committed_metrics"] is not None:
                committed = {name: dict(series) for name, series in read_metrics(stage["committed_metrics"]).items()}
                pairs = [
                    (value, committed.get(name, {}).get(step))
                    for name, series in runs[1]["metrics"].items()
                    for step, value in series
                ]
                entry["identical_to_committed_run"] = all(mine == theirs for mine, theirs in pairs)
                entry["compared_with_committed"] = len(pairs)
            committed_note = (
                f", identical to the committed run: {entry['identical_to_committed_run']}"
                if "identical_to_committed_run" in entry
                else ""
            )
            ratio = entry["speed_ratio_workers1_over_workers0"]
            print(f"{name}: data_workers=1 is {ratio:.2f}x as fast; identical metrics: {same}{committed_note}")
            results[name] = entry
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
