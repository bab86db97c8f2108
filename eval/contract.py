"""The evaluation contract: the columns every reasoning-segmentation split has, and how to load one.

One row per question. A split with ground truth has every column in ``FEATURES``; a public test
split has no ground truth in ``GROUND_TRUTH_COLUMNS`` (``mask``, ``ignore``), which is kept
elsewhere. It keeps those columns but leaves them null: ``datasets`` loads a folder's splits with
one schema, so a public test split beside a scored validation split must share it.
Masks are PNG images of mode "L": 255 = target (or ignored pixel), 0 = background.

``datasets`` takes about half a second to import, so it is imported on first use: ``FEATURES``
is built when first read (PEP 562) and ``load_split`` imports it itself. A leaderboard that only
needs ``KNOWN_TAGS`` never pays for it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

GROUND_TRUTH_COLUMNS = ("mask", "ignore")

# Tags with a fixed meaning across benchmarks; a dataset may add its own.
KNOWN_TAGS = ("long", "short", "simple", "complex", "multi-target", "no-target")


@functools.cache
def _features() -> datasets.Features:
    """The columns of a split with ground truth (``FEATURES``), built once."""
    import datasets

    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "image_id": datasets.Value("string"),
            "query": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "mask": datasets.Image(),
            "ignore": datasets.Image(),
            "source": datasets.Value("string"),
            "tags": datasets.List(datasets.Value("string")),
            "height": datasets.Value("int32"),
            "width": datasets.Value("int32"),
        }
    )


def __getattr__(name: str) -> Any:
    if name == "FEATURES":
        return _features()
    raise AttributeError(f"module 'eval.contract' has no attribute {name!r}")


def has_ground_truth(dataset: datasets.Dataset) -> bool:
    """True when every row has a ground-truth mask (a public split has the column, all null)."""
    if "mask" not in dataset.column_names:
        return False
    return dataset.data.column("mask").null_count == 0


def check_columns(dataset: datasets.Dataset, *, require_ground_truth: bool) -> None:
    """Raise ``ValueError`` naming what is missing, so a wrong folder fails early and clearly."""
    needed = set(_features()) - (set(GROUND_TRUTH_COLUMNS) if not require_ground_truth else {"ignore"})
    missing = sorted(needed - set(dataset.column_names))
    if missing:
        raise ValueError(f"the split lacks column(s) {', '.join(missing)}")
    if require_ground_truth and not has_ground_truth(dataset):
        raise ValueError(
            "the split has no ground-truth masks (it is the public copy of a held-out split): "
            "point at the folder that holds its ground truth"
        )


def load_split(
    data: str | os.PathLike[str],
    split: str,
    *,
    require_ground_truth: bool = True,
    token: str | None = None,
) -> datasets.Dataset:
    """Load one split from a local dataset folder or a Hub dataset id through ``datasets``.

    A private Hub dataset needs ``token`` (or ``HF_TOKEN`` in the environment).
    """
    import datasets

    path = Path(data)
    try:
        if path.is_dir():
            dataset = _load_local_split(path, split)
        else:
            dataset = datasets.load_dataset(str(data), split=split, token=token or os.environ.get("HF_TOKEN"))
    except ValueError as error:
        if "split" in str(error).lower():
            raise ValueError(f"{data} has no split {split!r}: {error}") from None
        raise
    except FileNotFoundError:
        raise ValueError(
            f"no dataset at {data!r}: give a folder with parquet shards and a README, or a Hub dataset id"
        ) from None
    check_columns(dataset, require_ground_truth=require_ground_truth)
    return dataset


def _load_local_split(folder: Path, split: str) -> datasets.Dataset:
    """Load a folder's split through its parquet files, so the cache follows the files.

    ``load_dataset(folder)`` caches a local folder under its name and card alone: a rewritten
    folder, or another folder of the same name, would silently come back with the old rows.
    Naming the files makes ``datasets`` key its cache on their paths and modification times.
    """
    import datasets

    data_files = datasets.load_dataset_builder(str(folder)).config.data_files or {}
    if split not in data_files:
        raise ValueError(f"{folder} has no split {split!r} (it has {', '.join(data_files) or 'none'})")
    return datasets.load_dataset("parquet", data_files={split: list(data_files[split])}, split=split)
