"""The values that pass between stages, and the JSON Lines files that hold them in the work folder.

Each stage appends one line per finished item, so an interrupted stage loses at most the line it
was writing; readers skip a truncated last line and keep the last record per key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval.rle import RLE

IMAGES_FILE = "images.jsonl"
DESCRIPTIONS_FILE = "descriptions.jsonl"
RESPONSES_FILE = "responses.jsonl"
REJECTED_FILE = "rejected.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass
class ObjectRecord:
    """One annotated object. ``id`` is its 1-based index within the image (what the LLM cites).

    ``box`` is XYWH in pixels (COCO convention); ``mask`` is COCO compressed RLE at the image's
    size; ``names`` are the category's lower-case spellings a question must not contain when
    this object is the answer (the name without its LVIS qualifier, and synonyms).
    """

    id: int
    category: str
    box: list[float]
    area: int
    mask: RLE
    names: list[str] = field(default_factory=list)
    annotation_id: int | str | None = None


@dataclass
class ImageRecord:
    """One selected image with its objects; ``level`` is ``simple`` or ``complex``."""

    image_id: str
    path: str
    height: int
    width: int
    level: str
    source: str
    objects: list[ObjectRecord]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageRecord:
        objects = [ObjectRecord(**obj) for obj in data["objects"]]
        return cls(**{**data, "objects": objects})

    def object(self, object_id: int) -> ObjectRecord | None:
        """The object with this id, or None when the image has none."""
        if 1 <= object_id <= len(self.objects):
            return self.objects[object_id - 1]
        return None


def read_jsonl(path: Path, key: str) -> dict[str, dict[str, Any]]:
    """Records of a stage file keyed by ``record[key]``, the last one winning; {} when absent."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run
            if isinstance(record, dict) and key in record:
                records[str(record[key])] = record
    return records


class JsonlAppender:
    """Appends records to a stage file, one flushed line each, repairing a cut-short last line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
            with path.open("rb") as handle:
                handle.seek(-1, os.SEEK_END)
                needs_newline = handle.read(1) != b"\n"
        else:
            needs_newline = False
        self._handle = path.open("a", encoding="utf-8")
        if needs_newline:
            self._handle.write("\n")

    def append(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace a stage file atomically (written beside it, then renamed)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)


def load_images(work: Path) -> list[ImageRecord]:
    """The ``select`` stage's records, in selection order."""
    path = work / IMAGES_FILE
    if not path.exists():
        raise ValueError(f"{work} has no {IMAGES_FILE}: run `python -m llmseg.datagen select` first")
    return [ImageRecord.from_json(record) for record in read_jsonl(path, "image_id").values()]


def update_summary(work: Path, stage: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Store one stage's summary in ``summary.json`` (other stages' entries are kept)."""
    path = work / SUMMARY_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    data[stage] = summary
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return data
