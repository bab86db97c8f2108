"""Anchor masks of `shapes` questions, rebuilt from the seed, for the selector's anchor loss.

A relation question names a second object, its anchor ("the star left of *the red heart*"). The
dataset stores only the answer mask, but every sample is a pure function of (seed, split,
index), so the scene graph, and with it the anchor objects' masks, can be rebuilt. The
``shapes-anchors`` sub-command writes them for a generated split into one parquet file
(``id``, ``anchors``: the compact RLE of each anchor object, none for questions without one),
which ``llmseg train --anchors`` reads.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from tqdm import tqdm

from eval import rle
from eval.contract import load_split
from llmseg.data.shapes.generate import SOURCE, GeneratedSample, generate_sample
from llmseg.data.shapes.queries import Filter, SceneFacts, _the

ANCHOR_FIELDS = ("anchor", "first", "second")  # the query fields that name one object each
COMPACT_RLE = {"size": [datasets.Value("int32")], "counts": datasets.Value("string")}
FEATURES = datasets.Features({"id": datasets.Value("string"), "anchors": [COMPACT_RLE]})


def anchor_filters(query: Any) -> list[Filter]:
    """The descriptions of the objects a query names besides its answer (empty when it names none)."""
    return [getattr(query, name) for name in ANCHOR_FIELDS if isinstance(getattr(query, name, None), Filter)]


def anchor_masks(generated: GeneratedSample) -> list[np.ndarray]:
    """H x W bool masks of the objects the question's anchors name (empty when it names none)."""
    facts = SceneFacts(generated.scene)
    filters = anchor_filters(generated.question.query)
    return [np.asarray(generated.scene.masks[_the(anchor, facts).index], bool) for anchor in filters]


def _index_of(sample_id: str, split: str) -> int:
    match = re.fullmatch(rf"{SOURCE}-{re.escape(split)}-(\d+)", sample_id)
    if match is None:
        raise ValueError(
            f"{sample_id!r} is not a generated `shapes` {split} sample id: only make-shapes data has anchors"
        )
    return int(match.group(1))


def anchor_rows(split: datasets.Dataset, split_name: str, seed: int) -> Iterator[dict[str, Any]]:
    """One row per sample of ``split``; each sample is regenerated and checked against the stored query."""
    for sample_id, query in tqdm(
        zip(split["id"], split["query"], strict=True), total=len(split), desc="anchors", unit="question"
    ):
        generated = generate_sample(seed, split_name, _index_of(sample_id, split_name))
        if generated.sample.query != query:
            raise ValueError(
                f"{sample_id} regenerated with seed {seed} asks {generated.sample.query!r}, not {query!r}: "
                "pass the --seed the split was made with"
            )
        yield {"id": sample_id, "anchors": [rle.encode(mask) for mask in anchor_masks(generated)]}


def write_anchors(data: str | Path, split: str, seed: int, out: str | Path) -> Path:
    """Write the anchor masks of every question of ``data``'s ``split`` (made with ``seed``) to ``out``."""
    rows = list(anchor_rows(load_split(str(data), split), split, seed))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=FEATURES).to_parquet(str(out))
    return out


def load_anchors(path: str | Path) -> datasets.Dataset:
    """The file ``write_anchors`` wrote, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no anchors file at {path}: write it with python -m llmseg.data shapes-anchors")
    anchors = datasets.Dataset.from_parquet(str(path))
    if set(anchors.column_names) != {"id", "anchors"}:
        raise ValueError(f"{path} has columns {anchors.column_names}, not id and anchors: it is not an anchors file")
    return anchors


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``shapes-anchors`` to ``python -m llmseg.data``."""
    parser = subparsers.add_parser(
        "shapes-anchors",
        help="write the anchor masks of a generated `shapes` split (for train --anchors)",
        description="Rebuild each question's scene from the seed and write its anchor objects' masks.",
    )
    parser.add_argument("--data", required=True, help="dataset folder written by make-shapes")
    parser.add_argument("--split", default="train", help="split to read (default train)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="the seed make-shapes used (default 0)")
    parser.add_argument("--out", required=True, type=Path, help="parquet file to write")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    print(f"wrote {write_anchors(args.data, args.split, args.seed, args.out)}")
    return 0
