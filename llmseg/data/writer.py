"""Write splits in the common data format: parquet shards plus a dataset card with ``configs:``.

Every data builder (LLM-Seg40K, ReasonSeg, ``shapes``, the generation pipeline) writes through
this module, so every folder it produces loads with ``datasets.load_dataset(folder)`` and
satisfies ``eval.contract``. Output is byte-for-byte deterministic for the same input rows.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from eval.contract import FEATURES

ROWS_PER_SHARD = 500


@dataclass
class Sample:
    """One question about one image, in memory.

    ``image`` is an HWC uint8 RGB array or a PIL image (or encoded image bytes, kept as they are);
    ``mask`` and ``ignore`` are HxW bool arrays at the image's size (``ignore`` may be None).
    """

    id: str
    image: Any
    image_id: str
    query: str
    answer: str
    mask: np.ndarray | None
    source: str
    tags: list[str] = field(default_factory=list)
    ignore: np.ndarray | None = None
    height: int = 0
    width: int = 0


def png_bytes(array_or_image: Any, *, mode: str | None = None) -> bytes:
    """PNG-encode an array or PIL image deterministically (no metadata, fixed compression)."""
    if isinstance(array_or_image, (bytes, bytearray)):
        return bytes(array_or_image)
    if isinstance(array_or_image, Image.Image):
        image = array_or_image
    else:
        array = np.asarray(array_or_image)
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        image = Image.fromarray(array)
    if mode is not None and image.mode != mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _row(sample: Sample, *, with_ground_truth: bool) -> dict[str, Any]:
    height, width = sample.height, sample.width
    if sample.mask is not None and (not height or not width):
        height, width = sample.mask.shape
    row: dict[str, Any] = {
        "id": sample.id,
        "image": {
            "bytes": png_bytes(sample.image, mode="RGB") if not isinstance(sample.image, bytes) else sample.image,
            "path": None,
        },
        "image_id": sample.image_id,
        "query": sample.query,
        "answer": sample.answer,
        "source": sample.source,
        "tags": list(sample.tags),
        "height": int(height),
        "width": int(width),
    }
    row["mask"] = row["ignore"] = None
    if with_ground_truth:
        if sample.mask is None:
            raise ValueError(f"sample {sample.id}: a split with ground truth needs a mask")
        if sample.mask.shape != (height, width):
            raise ValueError(f"sample {sample.id}: mask is {sample.mask.shape}, image is {(height, width)}")
        row["mask"] = {"bytes": png_bytes(sample.mask, mode="L"), "path": None}
        row["ignore"] = None if sample.ignore is None else {"bytes": png_bytes(sample.ignore, mode="L"), "path": None}
    return row


def _write_split(rows: Iterator[dict[str, Any]], directory: Path, split: str, schema: pa.Schema) -> int:
    """Write rows into ``directory/<split>-0000N.parquet`` shards; return how many rows."""
    for old in directory.glob(f"{split}-*.parquet"):
        old.unlink()
    count, shard, buffer = 0, 0, []
    for row in rows:
        buffer.append(row)
        count += 1
        if len(buffer) == ROWS_PER_SHARD:
            _flush(buffer, directory / f"{split}-{shard:05d}.parquet", schema)
            shard, buffer = shard + 1, []
    if buffer:  # an empty split gets no shard: datasets cannot load a zero-row parquet file
        _flush(buffer, directory / f"{split}-{shard:05d}.parquet", schema)
    return count


def _flush(rows: list[dict[str, Any]], path: Path, schema: pa.Schema) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, compression="zstd", write_statistics=False)


def card(title: str, body: str, splits: Iterable[str]) -> str:
    """A dataset card: YAML front matter whose ``configs:`` block maps splits to shards."""
    features = FEATURES
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: {split}-*.parquet"]
    lines += ["dataset_info:", "  features:"]
    for name, feature in features.items():
        kind = type(feature).__name__
        if kind == "Image":
            lines += [f"  - name: {name}", "    dtype: image"]
        elif kind == "List":
            lines += [f"  - name: {name}", "    list: string"]
        else:
            lines += [f"  - name: {name}", f"    dtype: {feature.dtype}"]
    lines += ["---", "", f"# {title}", "", body.strip(), ""]
    return "\n".join(lines)


def write_dataset(
    out: str | Path,
    splits: Mapping[str, Iterable[Sample]],
    *,
    title: str,
    description: str,
    holdout: str | None = None,
    holdout_dir: str | Path | None = None,
) -> dict[str, int]:
    """Write ``splits`` to ``out``; return rows per split.

    With ``holdout``, that split is written to ``out`` with null ``mask``/``ignore`` (the public
    copy: one schema for every split keeps the folder loadable) and, with its ground truth, to
    ``holdout_dir`` (which then holds only that split).
    """
    if (holdout is None) != (holdout_dir is None):
        raise ValueError("--holdout and --holdout-dir go together")
    if holdout is not None and holdout not in splits:
        raise ValueError(f"holdout split {holdout!r} is not among the splits written ({', '.join(splits)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    schema = FEATURES.arrow_schema
    counts: dict[str, int] = {}
    for split, samples in splits.items():
        if split == holdout:
            assert holdout_dir is not None
            gt_dir = Path(holdout_dir)
            gt_dir.mkdir(parents=True, exist_ok=True)
            samples = list(samples)
            counts[split] = _write_split((_row(s, with_ground_truth=True) for s in samples), gt_dir, split, schema)
            _write_split((_row(s, with_ground_truth=False) for s in samples), out, split, schema)
            (gt_dir / "README.md").write_text(card(f"{title} ({split} ground truth)", description, [split]))
        else:
            counts[split] = _write_split((_row(s, with_ground_truth=True) for s in samples), out, split, schema)
    written = [split for split in splits if counts[split]]
    if not written:
        raise ValueError("every split is empty: nothing to write")
    (out / "README.md").write_text(_public_card(title, description, written, holdout))
    return counts


def _public_card(title: str, description: str, splits: list[str], holdout: str | None) -> str:
    """Card for the public folder; it says which split has its ground truth kept apart."""
    body = description
    if holdout is not None:
        body += (
            f"\n\nThe `{holdout}` split is public: its `mask` and `ignore` columns are empty (null); "
            "its ground truth is kept apart."
        )
    return card(title, body, splits)
