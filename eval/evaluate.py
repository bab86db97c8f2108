"""``evaluate(predictions, references) -> Report``: the one scoring path (CLI, training, leaderboard)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eval import metrics
from eval.predictions import PredictionsError, name_ids, read_predictions, short_id, validated_masks
from eval.report import Report
from eval.rle import RLE

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

    from eval.cache import CachedSplit


@dataclass
class References:
    """A split's ground truth decoded once into RLE, to score any number of prediction sets.

    ``masks`` and ``ignores`` are in pycocotools form (``ignores[i]`` is None when sample i has no
    ignore region); ``sizes`` are (height, width) of the original images. ``fingerprint`` is the
    split's (``eval.groundtruth.fingerprint``) when it was loaded from one.
    """

    ids: list[str]
    sizes: list[tuple[int, int]]
    tags: list[list[str]]
    masks: list[dict[str, Any]]
    ignores: list[dict[str, Any] | None]
    fingerprint: str | None = None
    # Foreground pixels of each mask, when the loader has them already (the cache does).
    mask_areas: np.ndarray | None = field(default=None, repr=False, compare=False)
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
    def from_split(cls, dataset: datasets.Dataset, *, cache_dir: str | os.PathLike[str] | None = None) -> References:
        """Read a split's ground truth without touching its images, from the cache in ``cache_dir`` if given."""
        from eval.contract import check_columns
        from eval.groundtruth import SCORING_COLUMNS

        check_columns(dataset, require_ground_truth=True)
        present = [name for name in SCORING_COLUMNS if name in dataset.column_names]
        table = dataset.select_columns(present).with_format("arrow")[:]  # honours a select()ed view
        return cls.from_table(table, cache_dir=cache_dir)

    @classmethod
    def from_data(
        cls,
        data: str | os.PathLike[str],
        split: str,
        token: str | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> References:
        """Load ``split`` from a dataset folder or Hub id (``token`` for a private one), through the cache in
        ``cache_dir`` when given (``eval.cache``): a warm cache decodes no PNG, and for a local folder whose
        files have not changed since, reads no parquet either."""
        if cache_dir is not None:
            from eval.cache import GroundTruthCache

            cache = GroundTruthCache(cache_dir)
            unchanged = cache.load_unchanged(data, split)
            if unchanged is not None:
                return cls._from_cached(unchanged[1], unchanged[0])
        from eval import groundtruth

        shards = groundtruth.card_shards(data, split)
        if shards is None:
            return cls.from_table(groundtruth.read_scoring_columns(data, split, token=token), cache_dir=cache_dir)
        references = cls.from_table(groundtruth.read_shards(shards), cache_dir=cache_dir)
        if cache_dir is not None:
            assert references.fingerprint is not None  # from_table always fingerprints
            cache.remember(data, split, [Path(data) / "README.md", *shards], references.fingerprint)
        return references

    @classmethod
    def from_table(cls, table: pa.Table, *, cache_dir: str | os.PathLike[str] | None = None) -> References:
        """Build from a split's scoring columns (``eval.groundtruth.SCORING_COLUMNS``): the cache's RLE when it
        holds this split's fingerprint, else the PNGs decoded (and the cache written)."""
        from eval import groundtruth
        from eval.cache import CachedSplit, GroundTruthCache
        from eval.rle import areas

        key = groundtruth.fingerprint(table)
        columns = groundtruth.columns_of(table)
        ids, sizes, tags = columns["ids"], columns["sizes"], columns["tags"]
        cache = GroundTruthCache(cache_dir) if cache_dir is not None else None
        cached = cache.load(key) if cache is not None else None
        if cached is not None and (cached.ids, cached.sizes, cached.tags) == (ids, sizes, tags):
            return cls._from_cached(cached, key)
        mask_cells = groundtruth.png_bytes(table.column("mask"))
        ignore_cells = (
            groundtruth.png_bytes(table.column("ignore")) if "ignore" in table.column_names else [None] * len(ids)
        )
        decode = groundtruth.decode_all
        mask_counts = [c.encode("ascii") for c in decode(ids, sizes, mask_cells)]
        ignore_counts = [None if c is None else c.encode("ascii") for c in decode(ids, sizes, ignore_cells)]
        mask_areas = areas([{"size": list(size), "counts": c} for size, c in zip(sizes, mask_counts, strict=True)])
        decoded = CachedSplit(ids, sizes, tags, mask_counts, ignore_counts, mask_areas)
        if cache is not None:
            cache.save(key, decoded)
        return cls._from_cached(decoded, key)

    @classmethod
    def _from_cached(cls, split: CachedSplit, fingerprint: str) -> References:
        pairs = list(zip(split.sizes, split.masks, split.ignores, strict=True))
        masks = [{"size": [h, w], "counts": counts} for (h, w), counts, _ in pairs]
        ignores = [None if region is None else {"size": [h, w], "counts": region} for (h, w), _, region in pairs]
        return cls(
            ids=split.ids,
            sizes=split.sizes,
            tags=split.tags,
            masks=masks,
            ignores=ignores,
            fingerprint=fingerprint,
            mask_areas=split.mask_areas,
        )


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
    matched, areas = _match(predictions, references)
    intersection, union = metrics.intersection_union(
        matched, references.masks, references.ignores, prediction_areas=areas, mask_areas=references.mask_areas
    )
    resized_ciou = None
    if nciou:
        resized_ciou = metrics.ciou(*metrics.resized_intersection_union(matched, references.masks, references.ignores))
    return Report.from_counts(
        references.ids, intersection, union, references.tags, nciou=resized_ciou, n_bootstrap=n_bootstrap, seed=seed
    )


def _match(predictions: Mapping[str, RLE], references: References) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Predictions aligned with the references, in pycocotools form, and their areas, after every contract check."""
    if predictions.keys() != references.positions.keys():  # one set comparison; the lists below name the ids
        unknown = [i for i in predictions if i not in references.positions]
        if unknown:
            hint = " (is it the right split?)" if len(unknown) == len(predictions) else ""
            raise PredictionsError(f"id(s) {name_ids(unknown)} are not in the split{hint}")
        missing = [i for i in references.ids if i not in predictions]
        raise PredictionsError(f"the split's id(s) {name_ids(missing)} have no prediction: give one mask per sample")
    ids, cocos, areas = validated_masks(predictions)
    if ids != references.ids:  # the same ids (checked above) in another order
        position = {sample_id: k for k, sample_id in enumerate(ids)}
        order = [position[i] for i in references.ids]
        cocos, areas = [cocos[k] for k in order], areas[order]
    pairs = zip(references.ids, cocos, references.sizes, strict=True)
    wrong = [i for i, coco, (height, width) in pairs if coco["size"][0] != height or coco["size"][1] != width]
    if wrong:
        first = references.positions[wrong[0]]
        got = "x".join(map(str, cocos[first]["size"]))
        expected = "x".join(map(str, references.sizes[first]))
        raise PredictionsError(
            f"the mask of id(s) {name_ids(wrong)} is not at the image's size ({short_id(wrong[0])}: {got}, "
            f"image {expected}, as height x width)"
        )
    return cocos, areas
