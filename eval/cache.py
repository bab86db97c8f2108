"""The ground-truth cache: a split's masks and ignore regions as compact RLE, one parquet file per split.

Decoding a split's PNG masks is the slow part of loading it (seconds per thousand masks, more at
high resolution); the RLE of the same masks is a few hundred bytes each. The file is named by the
split's fingerprint (``eval.groundtruth.fingerprint``), so several splits (benchmarks) share one
folder and a changed split simply misses. A file is never trusted: it must parse, carry the
fingerprint it is named by, match a sha256 of its own payload (so a flipped bit, a truncation or
an edit is caught) and list the split's ids in order; anything else is a miss (logged), and the
caller rebuilds it. The RLE inside was written by ``eval.rle.encode`` from the decoded PNGs and
is not re-validated: the checksum already proves it is what was written, and re-validating would
cost as much as the rest of a warm start. (Like the code itself, the cache folder must be
writable only by whoever runs the judge.)
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

logger = logging.getLogger(__name__)

FORMAT = b"llmseg-ground-truth-1"
CACHE_DIR_VARIABLE = "LLMSEG_EVAL_CACHE"


def default_cache_dir() -> Path:
    """``$LLMSEG_EVAL_CACHE``, else ``$XDG_CACHE_HOME/llmseg/ground-truth`` (``~/.cache`` by default)."""
    override = os.environ.get(CACHE_DIR_VARIABLE)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmseg" / "ground-truth"


class GroundTruthCache:
    """A folder of ``<fingerprint>.parquet`` files, one per split."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path(self, fingerprint: str) -> Path:
        return self.folder / f"{fingerprint}.parquet"

    def load(
        self, fingerprint: str, ids: Sequence[str], sizes: Sequence[tuple[int, int]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None]] | None:
        """The split's masks and ignore regions (pycocotools form, checked by ``eval.rle``), or None when
        the file is absent or not trustworthy."""
        path = self.path(fingerprint)
        if not path.is_file():
            return None
        try:
            return _read(path, fingerprint, ids, sizes)
        except Exception as error:  # noqa: BLE001 - any failure to read or verify means "rebuild"
            logger.warning("ground-truth cache %s is unusable (%s): rebuilding it", path, error)
            return None

    def save(
        self, fingerprint: str, ids: Sequence[str], masks: Sequence[bytes], ignores: Sequence[bytes | None]
    ) -> Path | None:
        """Write the split's RLE atomically (a reader never sees half a file); None if the folder is not writable."""
        import tempfile

        import pyarrow.parquet as pq

        columns = {"id": pa.array(ids, pa.string()), "mask": pa.array(masks, pa.binary())}
        table = pa.table({**columns, "ignore": pa.array(ignores, pa.binary())})
        table = table.replace_schema_metadata(
            {b"format": FORMAT, b"fingerprint": fingerprint.encode(), b"sha256": _payload_digest(table).encode()}
        )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".partial-", suffix=".parquet")
            os.close(handle)
            try:
                pq.write_table(table, temporary, compression="zstd")
                os.replace(temporary, self.path(fingerprint))
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
        except OSError as error:
            logger.warning("could not write the ground-truth cache in %s (%s): going on without", self.folder, error)
            return None
        return self.path(fingerprint)


def _read(
    path: Path, fingerprint: str, ids: Sequence[str], sizes: Sequence[tuple[int, int]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None]]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read()  # pq.read_table would import pyarrow.dataset
    metadata = table.schema.metadata or {}
    if metadata.get(b"format") != FORMAT or metadata.get(b"fingerprint") != fingerprint.encode():
        raise ValueError("it belongs to another split or format")
    if metadata.get(b"sha256") != _payload_digest(table).encode():
        raise ValueError("its content does not match its checksum")
    if table.column("id").to_pylist() != list(ids):
        raise ValueError("its ids are not the split's")
    masks = table.column("mask").to_pylist()
    ignores = table.column("ignore").to_pylist()
    if len(masks) != len(sizes):
        raise ValueError("it holds another number of samples")
    cocos = [{"size": [h, w], "counts": counts} for (h, w), counts in zip(sizes, masks, strict=True)]
    regions = [
        None if counts is None else {"size": [h, w], "counts": counts}
        for (h, w), counts in zip(sizes, ignores, strict=True)
    ]
    return cocos, regions


def _payload_digest(table: pa.Table) -> str:
    """sha256 over every cell (length-prefixed, -1 for null), independent of how parquet chunked it."""
    from eval.groundtruth import binary_layout

    digest = hashlib.sha256()
    for name in ("id", "mask", "ignore"):
        column = table.column(name)
        digest.update(name.encode())
        layout = binary_layout(column)
        if layout is not None:  # straight from the Arrow buffers: the same bytes, no object per cell
            lengths, pieces = layout
            digest.update(lengths.tobytes())
            for piece in pieces:
                digest.update(piece)
            continue
        values = column.to_pylist()
        lengths = np.array([-1 if v is None else len(v) for v in values], dtype=np.int64)
        digest.update(lengths.tobytes())
        digest.update(b"".join(v.encode() if isinstance(v, str) else v for v in values if v is not None))
    return digest.hexdigest()
