"""The selection rule's thresholds on a validation split: the model runs once, every setting reuses its scores.

For the `shapes` model the rule is top-1 by similarity, union IoP > ``iop_threshold``, vetoed when
the existence probability is below ``existence_threshold``. This scores a grid of both on a
prepared validation split with the evaluation core (validation only: the test split is never
read), against the model's own setting in the same run, and writes
``bench/results/shapes_selection_sweep_<name>.json``.

    .venv/bin/python bench/shapes_selection_sweep.py --model runs/shapes-s3/best \\
        --data runs/shapes-val17 --prepared runs/stage3-prepared --name stage3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout, installed or not

from eval import References, evaluate, rle  # noqa: E402
from eval.contract import load_split  # noqa: E402
from llmseg.model.llmseg import LLMSeg  # noqa: E402
from llmseg.model.selection import select  # noqa: E402
from llmseg.prepare import load_prepared  # noqa: E402
from llmseg.train import TrainingData, collate, in_order_batches, loader  # noqa: E402

RESULTS = Path(__file__).parent / "results"
IOP_THRESHOLDS = (0.8, 0.85, 0.9, 0.95)
EXISTENCE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


@torch.no_grad()
def scores(model: LLMSeg, data: TrainingData, batch_size: int = 32) -> list[dict]:
    """Per question: its proposals, predicted IoP, similarity and existence probability."""
    model.eval()
    rows = []
    for samples in loader(data, in_order_batches(len(data), batch_size), 0):
        output = model(collate(model, samples))
        existence = torch.sigmoid(output.existence_logit)
        for row, sample in enumerate(samples):
            count = len(sample["proposals"])
            rows.append(
                {
                    "id": sample["id"],
                    "proposals": sample["proposals"],
                    "shape": sample["target"].shape,
                    "iop": output.iop[row, :count].numpy(),
                    "similarity": output.similarity[row, :count].numpy(),
                    "existence": float(existence[row]),
                }
            )
    return rows


def score_setting(rows: list[dict], selection, references: References) -> dict:
    predictions = {}
    for row in rows:
        chosen = select(row["iop"], row["similarity"], selection, row["existence"])
        mask = row["proposals"][chosen].any(axis=0) if chosen.any() else np.zeros(row["shape"], bool)
        predictions[row["id"]] = rle.encode(mask)
    report = evaluate(predictions, references, n_bootstrap=0)
    return {"giou": report.giou, "by_tag": {tag: s["giou"] for tag, s in sorted(report.by_tag.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="dataset with the validation split")
    parser.add_argument("--prepared", required=True, help="folder with validation.parquet")
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = LLMSeg.from_pretrained(args.model)
    split = load_split(args.data, "validation")
    rows = scores(model, TrainingData(split, load_prepared(args.prepared, "validation")))
    references = References.from_split(split)
    own = model.config.selection
    results = {"model": args.model, "data": args.data, "own": dataclasses.asdict(own)}
    results["own_score"] = score_setting(rows, own, references)
    grid = []
    for iop_threshold in IOP_THRESHOLDS:
        for existence_threshold in EXISTENCE_THRESHOLDS:
            setting = dataclasses.replace(own, iop_threshold=iop_threshold, existence_threshold=existence_threshold)
            grid.append({"iop_threshold": iop_threshold, "existence_threshold": existence_threshold,
                         **score_setting(rows, setting, references)})  # fmt: skip
    results["grid"] = grid
    best = max(grid, key=lambda entry: entry["giou"])
    results["best"] = best
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"shapes_selection_sweep_{args.name}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"own setting (IoP > {own.iop_threshold}, existence >= {own.existence_threshold}): "
          f"gIoU {results['own_score']['giou']:.4f}")  # fmt: skip
    for entry in grid:
        print(
            f"IoP > {entry['iop_threshold']:.2f}, existence >= {entry['existence_threshold']:.1f}: {entry['giou']:.4f}"
        )
    print(f"best: {best['iop_threshold']}, {best['existence_threshold']}: {best['giou']:.4f} "
          f"({best['giou'] / results['own_score']['giou']:.3f}x the own setting); wrote {out}")  # fmt: skip


if __name__ == "__main__":
    main()
