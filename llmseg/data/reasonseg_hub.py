"""``convert-reasonseg --hub``: the Hub layout of ReasonSeg (``Ricky06662/ReasonSeg_val`` / ``_test``) -> common format.

That layout (published for Seg-Zero; its dataset card's ``dataset_info``) has one split, ``test``,
with one row per image: ``image`` (Image), ``text`` (str, the image's first query), ``mask``
(a dense ``img_height`` x ``img_width`` list of lists of bool), ``image_id`` and ``ann_id`` (both
the file stem) and ``img_height``/``img_width`` (int64). Its masks are LISA's label map cast to
bool, so the ignore regions are folded into the target and cannot be told apart any more; and it
has no ``is_sentence`` flag. Rows become ``<image_id>-0`` (the ids and queries of LISA's release,
converted with ``--root``), source ``reasonseg``, tag ``no-target`` for an empty mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Unpack

import datasets
import numpy as np
import pyarrow as pa

from llmseg.data import converter
from llmseg.data.converter import BadInput, Conversion, OutputOptions
from llmseg.data.writer import Sample

COLUMNS = ("image", "text", "mask", "image_id", "img_height", "img_width")
# What a source's name ends with (``Ricky06662/ReasonSeg_val``, a folder ``ReasonSeg_test``) -> split.
SPLIT_SUFFIXES = {"_val": "validation", "_validation": "validation", "_test": "test"}
DESCRIPTION = (
    "ReasonSeg (Lai et al., LISA, 2024) converted to the llmseg common format from its Hub layout "
    "(`Ricky06662/ReasonSeg_val` / `Ricky06662/ReasonSeg_test`, published for Seg-Zero) by "
    "`python -m llmseg.data convert-reasonseg --hub`.\n\n"
    "**What that layout lost: the ignore regions.** Its masks fold LISA's ignore regions into the "
    "target, so pixels that LISA's evaluation excludes from scoring count as target here and the "
    "`ignore` column is empty. Scores on this folder differ from LISA's protocol wherever a "
    "prediction or a target meets an ignore region; convert LISA's release (`--root`) to score "
    "with them. The layout also has no long/short flag (`is_sentence`), so there are no "
    "`long`/`short` tags, and it keeps the first query of each image only."
)


def convert_reasonseg_hub(
    source: str | Path, out: Path, *, split: str | None = None, **options: Unpack[OutputOptions]
) -> Conversion:
    """Convert a Hub-layout split (a local folder or a Hub id) into ``split`` (default: from its name)."""
    split = split or split_of(source)
    dataset = load_hub_split(source)
    conversion = Conversion(skip_bad=options.get("skip_bad", False))
    seen: dict[str, int] = {}
    samples = conversion.samples(
        _rows(dataset), lambda row: _row_samples(source, row, seen), desc=f"ReasonSeg (Hub) {split}"
    )
    return conversion.write(
        out, {split: samples}, title="ReasonSeg (Hub layout)", description=DESCRIPTION, options=options
    )


def split_of(source: str | Path) -> str:
    """The split a source holds, told by its name's ending (``_val`` or ``_test``)."""
    name = Path(str(source)).name.lower()
    for suffix, split in SPLIT_SUFFIXES.items():
        if name.endswith(suffix):
            return split
    raise ValueError(f"cannot tell which split {source} holds from its name: give --split validation or test")


def load_hub_split(source: str | Path) -> datasets.Dataset:
    """The one split of a Hub-layout source, images left undecoded (their bytes as published).

    A folder is a download of the Hub dataset (card + parquet shards, read through its shards so
    the cache follows the files) or a ``save_to_disk`` copy; anything else is taken as a Hub id.
    """
    path = Path(source)
    try:
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(path))
        elif path.is_dir():
            data_files = datasets.load_dataset_builder(str(path)).config.data_files or {}
            loaded = datasets.load_dataset("parquet", data_files={k: list(v) for k, v in data_files.items()})
        else:
            loaded = datasets.load_dataset(str(source))
    except FileNotFoundError:
        raise ValueError(
            f"no dataset at {source!r}: give a folder (a download or save_to_disk copy of the Hub dataset) or a Hub id"
        ) from None
    except ConnectionError:
        raise ValueError(
            f"cannot reach {source!r} on the Hub: download it where there is network "
            f"(huggingface-cli download --repo-type dataset {source} --local-dir DIR) and give the folder"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise ValueError(f"{source} has the splits {', '.join(loaded)}: the Hub layout has one (test)")
        loaded = next(iter(loaded.values()))
    missing = [column for column in COLUMNS if column not in loaded.column_names]
    if missing:
        raise ValueError(
            f"{source} is not in ReasonSeg's Hub layout: it lacks the column(s) {', '.join(missing)} "
            "(LISA's own release goes with --root)"
        )
    return loaded.select_columns(list(COLUMNS)).cast_column("image", datasets.Image(decode=False))


def _rows(dataset: datasets.Dataset) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row) with every cell as Python except ``mask``, left in Arrow for speed."""
    index = 0
    for batch in dataset.with_format("arrow").iter(batch_size=16):
        columns = {name: batch[name] for name in COLUMNS}
        for i in range(batch.num_rows):
            row = {name: column[i] if name == "mask" else column[i].as_py() for name, column in columns.items()}
            yield index, row
            index += 1


def _row_samples(source: str | Path, numbered: tuple[int, dict[str, Any]], seen: dict[str, int]) -> list[Sample]:
    """One row's sample, every cell checked; ``seen`` maps the image ids met so far to their rows."""
    index, row = numbered
    image_id, query = row["image_id"], row["text"]
    where = f"{source} [row {index}, image_id {image_id!r}]"
    if not isinstance(image_id, str) or not image_id:
        raise BadInput(f"{source} [row {index}]: image_id must be a non-empty string")
    if image_id in seen:
        raise BadInput(f"{where}: the image_id repeats row {seen[image_id]}")
    seen[image_id] = index
    if not isinstance(query, str) or not query.strip():
        raise BadInput(f"{where}: text must be a non-empty query")
    mask = _mask(row["mask"], where)
    declared = (row["img_height"], row["img_width"])
    if mask.shape != declared:
        raise BadInput(
            f"{where}: mask is {mask.shape[0]}x{mask.shape[1]}, img_height x img_width is {declared[0]}x{declared[1]}"
        )
    image = _image(row["image"], where)
    upright = image.drawn_upright(mask.shape)
    size = image.size(upright=upright)
    if mask.shape != size:
        raise BadInput(f"{where}: mask is {mask.shape[0]}x{mask.shape[1]}, the image is {size[0]}x{size[1]}")
    return [
        Sample(
            id=f"{image_id}-0",
            image=image.stored(upright=upright),
            image_id=image_id,
            query=query,
            answer="",
            mask=mask,
            source="reasonseg",
            tags=[] if mask.any() else ["no-target"],
            height=size[0],
            width=size[1],
        )
    ]


def _mask(cell: pa.ListScalar, where: str) -> np.ndarray:
    """A list-of-rows bool cell as an HxW array; ``BadInput`` when it is null, ragged or holds nulls."""
    rows = cell.values  # one list per image row; None for a null cell
    if rows is None or len(rows) == 0 or rows.null_count:
        raise BadInput(f"{where}: mask must be a non-empty list of rows of booleans")
    widths = set(rows.value_lengths().to_pylist())
    pixels = rows.flatten()
    if len(widths) != 1 or pixels.null_count or not pa.types.is_boolean(pixels.type):
        raise BadInput(f"{where}: mask rows must be lists of booleans, all of one length")
    return pixels.to_numpy(zero_copy_only=False).reshape(len(rows), widths.pop())


def _image(cell: dict[str, Any] | None, where: str) -> converter.SourceImage:
    """The row's image from its bytes, or from its file where a local copy stores only a path."""
    if cell is not None and cell.get("bytes") is not None:
        return converter.decode_image(cell["bytes"], where)
    if cell is not None and cell.get("path"):
        return converter.read_image(Path(cell["path"]))
    raise BadInput(f"{where}: the row has no image")
