"""``evaluate(predictions, references) -> Report``: the one scoring path (CLI, training, leaderboard)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from eval import metrics
from eval.contract import check_columns, load_split
from eval.predictions import PredictionsError, name_ids, read_predictions, validate_masks
from eval.report import Report
from eval.rle import RLE, encode, to_pycoco

_COLUMNS = ["id", "mask", "ignore", "tags", "height", "width"]


@dataclass
class References:
    """A split's ground truth decoded once into RLE, to score any number of prediction sets.

    ``masks`` and ``ignores`` are in pycocotools form (``ignores[i]`` is None when sample i has no
    ignore region); ``sizes`` are (height, width) of the original images.
    """

    ids: list[str]
    sizes: list[tuple[int, int]]
    tags: list[list[str]]
    masks: list[dict[str, Any]]
    ignores: list[dict[str, Any] | None]
    positions: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not len(self.ids) == len(self.sizes) == len(self.tags) == len(self.masks) == len(self.ignores):
            raise ValueError("ids, sizes, tags, masks and ignores must have one entry per sample")
        self.positions = {sample_id: i for i, sample_id in enumerate(self.ids)}
        if len(self.positions) != len(self.ids):
            duplicates = sorted({i for i in self.ids if self.ids.count(i) > 1})
            raise ValueError(f"the split repeats id(s) {name_ids(duplicates)}: ids must be unique")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_split(cls, dataset: datasets.Dataset) -> References:
        """Decode a split's PNG masks (255 = target / ignored pixel) without touching its images."""
        check_columns(dataset, require_ground_truth=True)
        columns = dataset.select_columns([c for c in _COLUMNS if c in dataset.column_names])
        for name in ("mask", "ignore"):
            if name in columns.column_names:
                columns = columns.cast_column(name, datasets.Image(decode=False))
        ids, sizes, tags, masks, ignores = [], [], [], [], []
        with tqdm(total=len(columns), desc="decoding ground truth", unit="mask", disable=None) as progress:
            for batch in columns.iter(batch_size=256):
                for i, sample_id in enumerate(batch["id"]):
                    size = (int(batch["height"][i]), int(batch["width"][i]))
                    mask = _decode_png(batch["mask"][i], sample_id, size)
                    ignore = batch["ignore"][i] if "ignore" in batch else None
                    ids.append(sample_id)
                    sizes.append(size)
                    tags.append(list(batch["tags"][i]))
                    masks.append(to_pycoco(encode(mask)))
                    ignores.append(None if ignore is None else to_pycoco(encode(_decode_png(ignore, sample_id, size))))
                progress.update(len(batch["id"]))
        return cls(ids=ids, sizes=sizes, tags=tags, masks=masks, ignores=ignores)

    @classmethod
    def from_data(cls, data: str, split: str, token: str | None = None) -> References:
        """Load ``split`` from a dataset folder or Hub id (``token`` for a private one) and decode it."""
        return cls.from_split(load_split(data, split, require_ground_truth=True, token=token))


def evaluate(
    predictions: Mapping[str, RLE] | str | Path | bytes,
    references: References | datasets.Dataset,
    *,
    nciou: bool = False,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Report:
    """Score predictions (``{id: RLE}``, or a predictions file's path or bytes) against a split.

    Every sample of the split needs exactly one prediction at its image's size; anything else is
    a ``PredictionsError`` naming the first offending ids. ``n_bootstrap`` resamples (0 = none)
    give the 95% intervals, reproducibly for a given ``seed``.
    """
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be 0 or more, got {n_bootstrap}")
    if not isinstance(references, References):
        references = References.from_split(references)
    if not len(references):
        raise ValueError("the split has no samples to score")
    if not isinstance(predictions, Mapping):
        predictions = read_predictions(predictions)
    matched = _match(predictions, references)
    intersection, union = metrics.intersection_union(matched, references.masks, references.ignores)
    resized_ciou = None
    if nciou:
        resized_ciou = metrics.ciou(*metrics.resized_intersection_union(matched, references.masks, references.ignores))
    return Report.from_counts(
        references.ids, intersection, union, references.tags, nciou=resized_ciou, n_bootstrap=n_bootstrap, seed=seed
    )


def _match(predictions: Mapping[str, RLE], references: References) -> list[dict[str, Any]]:
    """Predictions aligned with the references, in pycocotools form, after every contract check."""
    unknown = [i for i in predictions if i not in references.positions]
    if unknown:
        hint = " (is it the right split?)" if len(unknown) == len(predictions) else ""
        raise PredictionsError(f"id(s) {name_ids(unknown)} are not in the split{hint}")
    missing = [i for i in references.ids if i not in predictions]
    if missing:
        raise PredictionsError(f"the split's id(s) {name_ids(missing)} have no prediction: give one mask per sample")
    cocos = validate_masks(predictions)
    aligned = [cocos[i] for i in references.ids]
    pairs = zip(references.ids, aligned, references.sizes, strict=True)
    wrong = [i for i, coco, size in pairs if tuple(coco["size"]) != size]
    if wrong:
        first = references.positions[wrong[0]]
        got = "x".join(map(str, aligned[first]["size"]))
        expected = "x".join(map(str, references.sizes[first]))
        raise PredictionsError(
            f"the mask of id(s) {name_ids(wrong)} is not at the image's size ({wrong[0]!r}: {got}, "
            f"image {expected}, as height x width)"
        )
    return aligned


def _decode_png(value: dict[str, Any], sample_id: str, size: tuple[int, int]) -> np.ndarray:
    """An HxW bool mask (nonzero = set) from a stored Image cell, checked against the row's size."""
    if value.get("bytes") is not None:
        image = Image.open(io.BytesIO(value["bytes"]))
    else:
        image = Image.open(value["path"])
    mask = np.asarray(image.convert("L")) != 0
    if mask.shape != size:
        height, width = mask.shape
        raise ValueError(f"sample {sample_id!r}: a mask is {height}x{width}, its row says {size[0]}x{size[1]}")
    return mask
