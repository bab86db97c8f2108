"""Demo examples drawn from a public split, written once to a cache folder as PNG files.

``gr.Examples`` needs image files; the split stores images inside parquet, so the first build
writes a few to disk (never at import) and later builds reuse them. Only public columns are read:
the examples never carry ground truth.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One demo example: an image file and a question about it."""

    id: str
    image_path: Path
    query: str
    tags: tuple[str, ...]


NO_TARGET = "no-target"


def pick_diverse(tag_lists: list[list[str]], count: int) -> list[int]:
    """Row indices covering as many distinct tags as possible, ``count`` at most.

    Rows with a target come first (the first example a visitor tries should draw a mask), then
    no-target rows; within each, earlier rows first.
    """
    order = sorted(range(len(tag_lists)), key=lambda index: NO_TARGET in tag_lists[index])
    chosen: list[int] = []
    covered: set[str] = set()
    for index in order:
        if len(chosen) == count:
            break
        if set(tag_lists[index]) - covered:
            chosen.append(index)
            covered.update(tag_lists[index])
    remaining = [index for index in order if index not in chosen]
    chosen += remaining[: count - len(chosen)]
    return sorted(chosen, key=lambda index: NO_TARGET in tag_lists[index])


def load_examples(data: str, split: str, cache_dir: Path, count: int) -> list[Example]:
    """Examples from ``data``/``split``; an unreadable dataset gives none (logged), not a broken app."""
    try:
        from eval.contract import load_split

        dataset = load_split(data, split, require_ground_truth=False)
    except (ValueError, OSError) as error:
        logger.warning("no demo examples: %s", error)
        return []
    dataset = dataset.select_columns(["id", "image", "query", "tags"])
    indices = pick_diverse(list(dataset["tags"]), count)
    folder = cache_dir / "examples" / _safe_name(f"{Path(data).name}-{split}")
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for index in indices:
        row = dataset[index]
        path = folder / f"{_safe_name(row['id'])}.png"
        if not path.exists():
            partial = path.with_suffix(".tmp")
            row["image"].convert("RGB").save(partial, format="PNG")
            partial.replace(path)  # atomic: two app processes never read a half-written file
        examples.append(Example(row["id"], path, row["query"], tuple(row["tags"])))
    return examples


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:120]
