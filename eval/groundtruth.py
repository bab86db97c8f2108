"""A split's ground truth as an Arrow table: reading it, fingerprinting it, decoding its PNG masks.

Only the scoring columns (id, mask, ignore, tags, height, width) are read: a local folder's
parquet shards are read column by column with pyarrow, so the images (the bulk of a split) are
never touched and ``datasets`` is not even imported when the folder's card names its shards.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

SCORING_COLUMNS = ("id", "mask", "ignore", "tags", "height", "width")


def read_scoring_columns(data: str | os.PathLike[str], split: str, *, token: str | None = None) -> pa.Table:
    """The split's scoring columns, checked to hold ground truth; raises ``ValueError`` saying what is wrong.

    A local folder whose README names its shards (``configs:`` ... ``data_files``) is read with
    pyarrow directly; anything else (a Hub id, a folder laid out by convention) goes through
    ``eval.contract.load_split``.
    """
    shards = card_shards(data, split)
    if shards is None:
        from eval.contract import load_split  # imports datasets: only for what pyarrow cannot resolve

        dataset = load_split(data, split, require_ground_truth=True, token=token)
        present = [name for name in SCORING_COLUMNS if name in dataset.column_names]
        return dataset.select_columns(present).with_format("arrow")[:]
    return read_shards(shards)


def card_shards(data: str | os.PathLike[str], split: str) -> list[str] | None:
    """The parquet files a local folder's card maps ``split`` to; None for a Hub id or a card that does not say."""
    return _card_shards(Path(data), split) if Path(data).is_dir() else None


def read_shards(shards: Sequence[str]) -> pa.Table:
    """The scoring columns of a split's parquet shards, checked to hold ground truth."""
    import pyarrow.parquet as pq

    tables = []
    for shard in shards:
        parquet = pq.ParquetFile(shard)  # not pq.read_table: it imports pyarrow.dataset, slow to import
        names = parquet.schema_arrow.names
        tables.append(parquet.read(columns=[name for name in SCORING_COLUMNS if name in names]))
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    _check_ground_truth(table)
    return table


def _card_shards(folder: Path, split: str) -> list[str] | None:
    """The parquet files the folder's card maps ``split`` to, or None when the card does not say."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    import yaml

    try:
        header = yaml.safe_load(text.split("---", 2)[1])
        configs = header.get("configs") or []
        default = next(c for c in configs if c.get("config_name", "default") == "default")
        entries = default["data_files"]
    except (yaml.YAMLError, AttributeError, StopIteration, KeyError, TypeError, IndexError):
        return None
    if not isinstance(entries, list):
        return None
    named = {entry.get("split"): entry.get("path") for entry in entries if isinstance(entry, dict)}
    if split not in named:
        known = ", ".join(str(name) for name in named) or "none"
        raise ValueError(f"{folder} has no split {split!r} (it has {known})")
    patterns = named[split] if isinstance(named[split], list) else [named[split]]
    files = sorted({f for pattern in patterns for f in glob.glob(str(folder / str(pattern)))})
    if not files or not all(f.endswith(".parquet") for f in files):
        return None  # not plain parquet shards: let datasets resolve it
    return files


def _check_ground_truth(table: pa.Table) -> None:
    missing = sorted({"id", "mask", "tags", "height", "width"} - set(table.column_names))
    if missing:
        raise ValueError(f"the split lacks column(s) {', '.join(missing)}")
    if table.column("mask").null_count:
        raise ValueError(
            "the split has no ground-truth masks (it is the public copy of a held-out split): "
            "point at the folder that holds its ground truth"
        )


def fingerprint(table: pa.Table) -> str:
    """A sha256 over every value that affects a score (ids, masks' and ignore regions' PNG bytes, tags, sizes).

    Column by column it digests the column's name, every value's length and then all values'
    bytes (an image's encoded bytes, ``repr`` of anything else). It reads the PNG bytes but
    decodes none, which is what makes it much cheaper than decoding (``bench/eval_speed.py``);
    an Image column without null cells is hashed straight from its Arrow buffers, which gives the
    same digest without a Python object per cell.
    """
    digest = hashlib.sha256()
    for name in SCORING_COLUMNS:
        if name not in table.column_names:
            continue
        digest.update(name.encode())
        column = table.column(name)
        layout = _image_layout(column) if pa.types.is_struct(column.type) else None
        if layout is not None:
            lengths, pieces = layout
            digest.update(lengths.tobytes())
            for piece in pieces:
                digest.update(piece)
            continue
        values = _fingerprint_values(column)
        digest.update(np.fromiter(map(len, values), dtype=np.int64, count=len(values)).tobytes())
        digest.update(b"".join(values))
    return digest.hexdigest()


def _image_layout(column: pa.ChunkedArray) -> tuple[np.ndarray, list[memoryview | bytes]] | None:
    """What ``_fingerprint_values`` gives an Image column (a null cell as ``b"None"``), as lengths and bytes
    read off the Arrow buffers; None when a cell has only a path (it is read from disk) or the layout is unusual."""
    lengths, pieces = [], []
    for chunk in column.chunks:
        children = dict(zip([field.name for field in chunk.type], chunk.flatten(), strict=True))
        cells = binary_layout(pa.chunked_array([children["bytes"]]))
        paths = binary_layout(pa.chunked_array([children["path"]])) if "path" in children else None
        if cells is None or ("path" in children and paths is None):
            return None
        sizes, data = cells
        null = sizes < 0
        if paths is not None and (paths[0][null] >= 0).any():
            return None
        if null.any():
            joined = np.frombuffer(b"".join(data), dtype=np.uint8)
            before = (np.cumsum(np.where(null, 0, sizes)) - np.where(null, 0, sizes))[null]
            data = [np.insert(joined, np.repeat(before, 4), np.tile(np.frombuffer(b"None", np.uint8), len(before)))]
            sizes = np.where(null, 4, sizes)
        lengths.append(sizes)
        pieces += data
    return (np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)), pieces


def binary_layout(column: pa.ChunkedArray) -> tuple[np.ndarray, list[memoryview]] | None:
    """Every cell's length in bytes (int64, -1 for a null) and the cells' bytes back to back, in pieces.

    Read off the Arrow buffers (offsets and data) without a Python object per cell. None when the
    column is not binary or string, or when a null cell's slot holds bytes (callers then go cell
    by cell).
    """
    lengths, pieces = [], []
    for chunk in column.chunks:
        if pa.types.is_binary(chunk.type) or pa.types.is_string(chunk.type):
            width = np.int32
        elif pa.types.is_large_binary(chunk.type) or pa.types.is_large_string(chunk.type):
            width = np.int64
        else:
            return None
        if not len(chunk):
            continue
        validity, offsets_buffer, data = chunk.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=width)[chunk.offset : chunk.offset + len(chunk) + 1]
        sizes = np.diff(offsets).astype(np.int64)
        if chunk.null_count:
            bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
            valid = bits[chunk.offset : chunk.offset + len(chunk)].astype(bool)
            if sizes[~valid].any():
                return None
            sizes[~valid] = -1
        lengths.append(sizes)
        if data is not None and offsets[-1] > offsets[0]:
            pieces.append(memoryview(data)[int(offsets[0]) : int(offsets[-1])])
    return (np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)), pieces


def _fingerprint_values(column: pa.ChunkedArray) -> list[bytes]:
    if pa.types.is_struct(column.type):  # an Image struct: its encoded bytes
        return [b"None" if value is None else value for value in png_bytes(column)]
    return [text.encode() for text in map(repr, column.to_pylist())]


def png_bytes(column: pa.ChunkedArray) -> list[bytes | None]:
    """The encoded bytes of an Image column's cells (None for a null cell); a path-only cell is read from disk."""
    if column.num_chunks == 0:
        return []
    combined = column.combine_chunks()
    # flatten() applies the array's offset and its nulls to the children (no pyarrow.compute import).
    children = dict(zip([field.name for field in combined.type], combined.flatten(), strict=True))
    cells = children["bytes"].to_pylist()
    if "path" in children:
        pairs = zip(cells, children["path"].to_pylist(), strict=True)
        cells = [_read_path(path) if cell is None and path is not None else cell for cell, path in pairs]
    return cells


def _read_path(path: str) -> bytes:
    return Path(path).read_bytes()


def decode_png(encoded: bytes, sample_id: str, size: tuple[int, int]) -> np.ndarray:
    """An HxW bool mask (nonzero = set) from a stored PNG, checked against the row's size."""
    from PIL import Image

    mask = np.asarray(Image.open(io.BytesIO(encoded)).convert("L")) != 0
    if mask.shape != size:
        height, width = mask.shape
        raise ValueError(f"sample {sample_id!r}: a mask is {height}x{width}, its row says {size[0]}x{size[1]}")
    return mask


def decode_all(ids: Sequence[str], sizes: Sequence[tuple[int, int]], cells: Sequence[bytes | None]) -> list[str | None]:
    """Compressed RLE counts (ASCII) of every stored PNG mask, None for a null cell: the slow, cold path."""
    from tqdm.auto import tqdm

    from eval.rle import encode

    out: list[str | None] = []
    for sample_id, size, cell in tqdm(
        zip(ids, sizes, cells, strict=True), total=len(ids), desc="decoding ground truth", unit="mask", disable=None
    ):
        out.append(None if cell is None else encode(decode_png(cell, sample_id, size))["counts"])
    return out


def columns_of(table: pa.Table) -> dict[str, Any]:
    """ids, (height, width) sizes and tags of a scoring table, as Python lists."""
    # to_pylist, not to_numpy: a ChunkedArray's to_numpy imports pandas, slower than the whole list.
    heights = table.column("height").to_pylist()
    widths = table.column("width").to_pylist()
    return {
        "ids": table.column("id").to_pylist(),
        "sizes": list(zip(heights, widths, strict=True)),
        "tags": [list(tags) if tags is not None else [] for tags in table.column("tags").to_pylist()],
    }
