"""The ground-truth cache: a split's scoring columns with its masks as compact RLE, one file per split.

Decoding a split's PNG masks is the slow part of loading it (seconds per thousand masks, more at
high resolution); the RLE of the same masks is a few hundred bytes each. A ``<fingerprint>.rle``
file holds everything scoring needs (ids, sizes, tags, the masks' and ignore regions' RLE, the
masks' pixel counts), named by the split's fingerprint (``eval.groundtruth.fingerprint``), so several
splits (benchmarks) share one folder and a changed split simply misses. A file is never trusted:
it must parse, carry the fingerprint it is named by and match a sha256 of its own payload (so a
flipped bit, a truncation or an edit is caught); anything else is a miss (logged), and the caller
rebuilds it. The RLE inside was written by ``eval.rle.encode`` from the decoded PNGs and is not
re-validated: the checksum already proves it is what was written.

Computing the fingerprint means reading the split's parquet (pyarrow, its mask bytes): about a
third of a warm run. So, as git's index does for a working tree, the cache also remembers, per
local folder and split, the ``os.stat`` of the files the fingerprint was computed from (the
card, the shards and the folders that hold them) in a ``<key>.split.json`` file. While every
one of them is unchanged (size, modification and change times in ns, inode) and the cache file
is the one the record was written against (its payload checksum is kept in the record), the
remembered fingerprint is used without reading the parquet; any change, or a damaged record,
falls back to computing it. A record is only written for files last changed more than
``RACY_SECONDS`` ago, so an edit within the file system's timestamp granularity cannot go unseen.
(Like the code itself, the cache folder must be writable only by whoever runs the judge.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

FORMAT = b"llmseg-ground-truth-2\n"
STAT_FORMAT = "llmseg-split-stat-1"
CACHE_DIR_VARIABLE = "LLMSEG_EVAL_CACHE"
# Files changed more recently than this are not remembered by their stat (git's "racy clean" problem).
RACY_SECONDS = 2.0
# The sections of a cache file, in order: int64 arrays (one value per sample) or byte blobs.
_INTEGER_SECTIONS = ("id_lengths", "heights", "widths", "mask_lengths", "ignore_lengths", "mask_areas")
_SECTIONS = (*_INTEGER_SECTIONS, "ids", "tags", "masks", "ignores")


def default_cache_dir() -> Path:
    """``$LLMSEG_EVAL_CACHE``, else ``$XDG_CACHE_HOME/llmseg/ground-truth`` (``~/.cache`` by default)."""
    override = os.environ.get(CACHE_DIR_VARIABLE)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmseg" / "ground-truth"


@dataclass
class CachedSplit:
    """What a cache file holds: per sample its id, (height, width), tags, mask and ignore RLE counts
    (None for no ignore region) and the mask's foreground pixel count."""

    ids: list[str]
    sizes: list[tuple[int, int]]
    tags: list[list[str]]
    masks: list[bytes]
    ignores: list[bytes | None]
    mask_areas: np.ndarray


class GroundTruthCache:
    """A folder of ``<fingerprint>.rle`` files, one per split, and of ``<key>.split.json`` stat records."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path(self, fingerprint: str) -> Path:
        return self.folder / f"{fingerprint}.rle"

    def load(self, fingerprint: str, *, payload_sha256: str | None = None) -> CachedSplit | None:
        """The split stored under ``fingerprint``, or None when the file is absent or not trustworthy (or, with
        ``payload_sha256``, not that exact content)."""
        path = self.path(fingerprint)
        if not path.is_file():
            return None
        try:
            return _read(path, fingerprint, payload_sha256)
        except Exception as error:  # noqa: BLE001 - any failure to read or verify means "rebuild"
            logger.warning("ground-truth cache %s is unusable (%s): rebuilding it", path, error)
            return None

    def save(self, fingerprint: str, split: CachedSplit) -> Path | None:
        """Write the split atomically (a reader never sees half a file); None if the folder is not writable."""
        path = self.path(fingerprint)
        return path if _write_atomically(self.folder, path, _encode(fingerprint, split)) else None

    def load_unchanged(self, data: str | os.PathLike[str], split: str) -> tuple[str, CachedSplit] | None:
        """The fingerprint and cached content of ``split`` of the local folder ``data``, when its stat record
        says none of its files changed and the cache file is the one the record was written beside."""
        path = self._stat_path(data, split)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            body = {key: value for key, value in record.items() if key != "sha256"}
            if record.get("sha256") != _digest(body) or body["format"] != STAT_FORMAT:
                raise ValueError("it does not match its checksum")
            if body["folder"] != _resolved(data) or body["split"] != split:
                raise ValueError("it belongs to another folder or split")
            files, fingerprint, payload = body["files"], body["fingerprint"], body["payload_sha256"]
            if not isinstance(files, list) or not files or not isinstance(fingerprint, str):
                raise ValueError("it lists no files")
        except Exception as error:  # noqa: BLE001 - a damaged record only costs computing the fingerprint
            logger.warning("ground-truth stat record %s is unusable (%s): ignoring it", path, error)
            return None
        for name, recorded in files:
            if _stat(name) != recorded:
                return None
        cached = self.load(fingerprint, payload_sha256=payload)
        return None if cached is None else (fingerprint, cached)

    def remember(
        self, data: str | os.PathLike[str], split: str, files: Sequence[str | os.PathLike[str]], fingerprint: str
    ) -> Path | None:
        """Record the stat of ``files`` (what ``fingerprint`` was computed from, with the folders holding them)
        and the checksum of the cache file they were checked against, which a later run then requires.

        Nothing is written when one of them changed in the last ``RACY_SECONDS``, when there is no cache file
        or the folder is not writable.
        """
        try:
            payload = _header(self.path(fingerprint))["sha256"]
        except (OSError, ValueError, KeyError):
            return None
        folder = Path(_resolved(data))
        watched = {folder}
        for name in files:
            resolved = Path(name).resolve()
            watched.add(resolved)
            watched.update(parent for parent in resolved.parents if parent.is_relative_to(folder))
        stats = sorted((str(name), _stat(name)) for name in watched)
        if any(stat is None for _, stat in stats):
            return None
        now = time.time_ns()
        if any(now - max(stat[1], stat[2]) < RACY_SECONDS * 1e9 for _, stat in stats):
            return None
        body = {
            "format": STAT_FORMAT,
            "folder": str(folder),
            "split": split,
            "files": [[name, stat] for name, stat in stats],
            "fingerprint": fingerprint,
            "payload_sha256": payload,
        }
        path = self._stat_path(data, split)
        content = json.dumps({**body, "sha256": _digest(body)}).encode()
        return path if _write_atomically(self.folder, path, content) else None

    def _stat_path(self, data: str | os.PathLike[str], split: str) -> Path:
        key = hashlib.sha256(f"{_resolved(data)}\n{split}".encode()).hexdigest()[:32]
        return self.folder / f"{key}.split.json"


def _resolved(data: str | os.PathLike[str]) -> str:
    return str(Path(data).resolve())


def _stat(name: str | os.PathLike[str]) -> list[int] | None:
    try:
        stat = os.stat(name)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _write_atomically(folder: Path, path: Path, content: bytes) -> bool:
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".partial-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(content)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except OSError as error:
        logger.warning("could not write the ground-truth cache in %s (%s): going on without", folder, error)
        return False
    return True


def _encode(fingerprint: str, split: CachedSplit) -> bytes:
    """FORMAT, a JSON header line (fingerprint, sample count, section sizes, sha256 of the payload), the payload."""
    ids = [i.encode() for i in split.ids]
    ignores = [b"" if counts is None else counts for counts in split.ignores]
    integers = {
        "id_lengths": [len(i) for i in ids],
        "heights": [h for h, _ in split.sizes],
        "widths": [w for _, w in split.sizes],
        "mask_lengths": [len(m) for m in split.masks],
        "ignore_lengths": [-1 if counts is None else len(counts) for counts in split.ignores],
        "mask_areas": split.mask_areas,
    }
    sections = {name: np.asarray(values, dtype="<i8").tobytes() for name, values in integers.items()}
    sections.update(
        ids=b"".join(ids), tags=json.dumps(split.tags).encode(), masks=b"".join(split.masks), ignores=b"".join(ignores)
    )
    payload = b"".join(sections[name] for name in _SECTIONS)
    header = {
        "fingerprint": fingerprint,
        "n": len(split.ids),
        "sections": [len(sections[name]) for name in _SECTIONS],
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    return FORMAT + json.dumps(header).encode() + b"\n" + payload


def _header(path: Path) -> dict:
    """A cache file's header line (fingerprint, sample count, section sizes, payload checksum)."""
    with path.open("rb") as file:
        if file.readline(len(FORMAT)) != FORMAT:
            raise ValueError("it is not a ground-truth cache file of this version")
        return json.loads(file.readline(1 << 16))


def _read(path: Path, fingerprint: str, payload_sha256: str | None = None) -> CachedSplit:
    content = path.read_bytes()
    if not content.startswith(FORMAT):
        raise ValueError("it is not a ground-truth cache file of this version")
    end = content.index(b"\n", len(FORMAT))
    header = json.loads(content[len(FORMAT) : end])
    if header["fingerprint"] != fingerprint:
        raise ValueError("it belongs to another split")
    if payload_sha256 is not None and header["sha256"] != payload_sha256:
        raise ValueError("it was rewritten since the split's stat was recorded")
    payload = memoryview(content)[end + 1 :]
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise ValueError("its content does not match its checksum")
    n, lengths = header["n"], header["sections"]
    if sum(lengths) != len(payload) or any(lengths[i] != 8 * n for i in range(len(_INTEGER_SECTIONS))):
        raise ValueError("its sections do not add up")
    sections, start = {}, 0
    for name, length in zip(_SECTIONS, lengths, strict=True):
        sections[name] = payload[start : start + length]
        start += length
    integer = {name: np.frombuffer(sections[name], dtype="<i8") for name in _INTEGER_SECTIONS}
    ids = [cell.decode() for cell in _cells(sections["ids"], integer["id_lengths"])]
    masks = _cells(sections["masks"], integer["mask_lengths"])
    present = integer["ignore_lengths"] >= 0
    ignore_cells = iter(_cells(sections["ignores"], integer["ignore_lengths"][present]))
    ignores = [next(ignore_cells) if has else None for has in present.tolist()]
    tags = json.loads(bytes(sections["tags"]))
    if len(tags) != n:
        raise ValueError("its tags are not one list per sample")
    sizes = list(zip(integer["heights"].tolist(), integer["widths"].tolist(), strict=True))
    return CachedSplit(ids, sizes, tags, masks, ignores, integer["mask_areas"].copy())


def _cells(blob: memoryview, lengths: np.ndarray) -> list[bytes]:
    """The blob cut into consecutive cells of ``lengths`` bytes; they must cover it exactly."""
    if (lengths < 0).any() or int(lengths.sum()) != len(blob):
        raise ValueError("its cells do not add up")
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]] if ends else []
    data = bytes(blob)
    return [data[a:b] for a, b in zip(starts, ends, strict=True)]
