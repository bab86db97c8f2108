"""Compute proposals once per image and their IoU/IoP targets per question, for training.

SAM (or the colour generator) is the slowest stage and its output never changes during
training, so ``python -m llmseg prepare`` runs it once and stores, per question: the proposals
as compact COCO RLE, their generator scores, and their IoU and IoP against the question's ground
truth (outside ignore regions). Training then reads these rows with ``datasets``.
"""

from __future__ import annotations

import argparse
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from tqdm import tqdm

from eval import rle
from eval.contract import load_split
from llmseg.model.config import LLMSegConfig
from llmseg.model.losses import overlap_targets
from llmseg.model.proposals import ProposalGenerator, Proposals, build_proposal_generator

PREPARED_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "image_id": datasets.Value("string"),
        "proposals": datasets.List(
            {"size": datasets.List(datasets.Value("int32")), "counts": datasets.Value("string")}
        ),
        "scores": datasets.List(datasets.Value("float32")),
        "iou": datasets.List(datasets.Value("float32")),
        "iop": datasets.List(datasets.Value("float32")),
        "has_target": datasets.Value("bool"),
    }
)


def image_array(image: Any) -> np.ndarray:
    """A dataset ``Image`` cell (PIL) -> HWC uint8 RGB array."""
    return np.asarray(image.convert("RGB"))


def prepared_rows(dataset: datasets.Dataset, generator: ProposalGenerator, *, desc: str) -> Iterator[dict[str, Any]]:
    """One row per question; the generator runs once per distinct ``image_id`` in a run of equal ids."""
    last_image_id: str | None = None
    proposals: Proposals | None = None
    encoded: list[dict[str, Any]] = []
    for sample in tqdm(dataset, desc=desc, unit="question"):
        if sample["image_id"] != last_image_id or proposals is None:
            proposals = generator(image_array(sample["image"]))
            encoded = [rle.encode(mask) for mask in proposals.masks]
            last_image_id = sample["image_id"]
        target = np.asarray(sample["mask"].convert("L")) > 127
        ignore = np.asarray(sample["ignore"].convert("L")) > 127 if sample["ignore"] is not None else None
        iou, iop = overlap_targets(proposals.masks, target, ignore)
        yield {
            "id": sample["id"],
            "image_id": sample["image_id"],
            "proposals": encoded,
            "scores": proposals.scores.astype(np.float32).tolist(),
            "iou": iou.astype(np.float32).tolist(),
            "iop": iop.astype(np.float32).tolist(),
            "has_target": bool(target.any()),
        }


def _prepare_shard(job: tuple[LLMSegConfig, datasets.Dataset, int, int, str]) -> list[dict[str, Any]]:
    """Rows of shard ``index`` of ``count`` (contiguous, so runs of one image stay together)."""
    config, dataset, index, count, device = job
    shard = dataset.shard(num_shards=count, index=index, contiguous=True)
    generator = build_proposal_generator(config.proposals, device=device)
    return list(prepared_rows(shard, generator, desc=f"proposals (part {index + 1}/{count})"))


def prepare(
    config: LLMSegConfig,
    data: str,
    split: str,
    out: str | Path,
    *,
    limit: int | None = None,
    device: str = "cpu",
    workers: int = 1,
) -> Path:
    """Write ``<out>/<split>.parquet`` with proposals and targets for every question of the split.

    ``workers`` > 1 splits the questions into contiguous parts prepared by as many processes
    (CPU proposal generators only); the output does not depend on it.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit} (leave it out to prepare the whole split)")
    dataset = load_split(data, split)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    count = max(1, min(workers, len(dataset)))
    jobs = [(config, dataset, index, count, device) for index in range(count)]
    if count == 1 or device != "cpu":  # one process, or a GPU generator that must not fork
        parts = [_prepare_shard(job) for job in jobs]
    else:
        with multiprocessing.get_context("fork").Pool(count) as pool:
            parts = pool.map(_prepare_shard, jobs)
    rows = [row for part in parts for row in part]
    table = datasets.Dataset.from_list(rows, features=PREPARED_FEATURES)
    target = Path(out) / f"{split}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(str(target))
    return target


def load_prepared(out: str | Path, split: str) -> datasets.Dataset:
    """Read what ``prepare`` wrote; a clear error says which command makes it."""
    path = Path(out) / f"{split}.parquet"
    if not path.is_file():
        raise ValueError(f"{path} not found: run `python -m llmseg prepare --split {split} --out {out} ...` first")
    return datasets.Dataset.from_parquet(str(path), features=PREPARED_FEATURES)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("prepare", help="compute proposals and their IoU/IoP targets once per split")
    parser.add_argument(
        "--preset", required=True, help="preset name, config.json or model folder (its proposal settings are used)"
    )
    parser.add_argument("--data", required=True, help="dataset folder or Hub id")
    parser.add_argument("--split", action="append", required=True, help="split to prepare (repeatable)")
    parser.add_argument("--out", required=True, help="folder for <split>.parquet")
    parser.add_argument("--limit", type=int, default=None, help="prepare only the first N questions of each split")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1, help="processes computing proposals (CPU generators)")
    parser.set_defaults(run=_run)


def starting_point(name_or_path: str) -> tuple[LLMSegConfig, Path | None]:
    """(config, weights folder) to train from.

    A preset name or a ``config.json`` file starts from that config (pretrained bases, fresh
    heads); a model folder starts from its saved weights.
    """
    from llmseg.model import checkpoint
    from llmseg.model.presets import PRESETS, get_preset

    path = Path(name_or_path)
    if path.is_file() and path.suffix == ".json":
        return LLMSegConfig.from_pretrained(path), None
    if name_or_path in PRESETS and not path.is_dir():
        return get_preset(name_or_path), None
    return checkpoint.resolve(name_or_path)


def _run(args: argparse.Namespace) -> int:
    config, _ = starting_point(args.preset)
    for split in args.split:
        path = prepare(config, args.data, split, args.out, limit=args.limit, device=args.device, workers=args.workers)
        print(f"wrote {path}")
    return 0
