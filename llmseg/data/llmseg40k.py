"""``convert-llmseg40k``: the LLM-Seg40K release (annotations + COCO/EgoObjects images) -> common format.

The release has one JSON per split (``train.json``, ``validation.json``, ``test.json``), a dict
keyed by image file name: ``{"from_dataset": "coco" | "ego_objects", "qa_pairs": [{"question",
"answer", "rle_seg": {"size": [h, w], "counts": str}}]}``. Images live at
``<root>/coco/train2017/<name>`` or ``<root>/ego_objects/images/<name>``. One row per qa pair, id
``<image file stem>-<index of the pair>``; tags: the source, and ``no-target`` for an empty mask.

This module also holds what the converters of released benchmarks share: ``BadInput``, image
reading, and the ``--out``/``--holdout``/``--skip-bad`` options with their report.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps
from tqdm import tqdm

from eval import rle
from llmseg.data.writer import Sample, png_bytes, write_dataset

SPLITS = ("train", "validation", "test")
IMAGE_FOLDERS = {"coco": Path("coco/train2017"), "ego_objects": Path("ego_objects/images")}
_ORIENTATION = Image.ExifTags.Base.Orientation
_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees


class BadInput(ValueError):
    """An input file is missing or malformed; the message names it. ``--skip-bad`` skips what raised it."""


@dataclass
class Conversion:
    """What a converter wrote (rows per split) and what it skipped (one line each)."""

    rows: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def summary(self, out: Path) -> str:
        written = ", ".join(f"{count} {split}" for split, count in self.rows.items())
        lines = [f"wrote {written} samples to {out}"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} bad input(s):")
            lines += [f"  {reason}" for reason in self.skipped]
        return "\n".join(lines)


@dataclass
class SourceImage:
    """An image file read and checked: its bytes, decoded pixels and raw (height, width)."""

    path: Path
    data: bytes
    pixels: Image.Image

    @property
    def raw_size(self) -> tuple[int, int]:
        return self.pixels.height, self.pixels.width

    @property
    def upright_size(self) -> tuple[int, int]:
        """(height, width) once its EXIF orientation is applied, as viewers and OpenCV show it."""
        swapped = self.pixels.getexif().get(_ORIENTATION) in _SWAPS_SIDES
        return (self.pixels.width, self.pixels.height) if swapped else self.raw_size

    def stored(self, *, upright: bool) -> bytes:
        """Bytes to store so that every reader sees the pixels the annotations were drawn on.

        ``datasets`` applies an EXIF orientation when it decodes and most other readers do not,
        so a file carrying one is re-encoded (PNG, lossless) in the chosen orientation without it.
        """
        if self.pixels.getexif().get(_ORIENTATION) in (None, 1):
            return self.data
        return png_bytes(ImageOps.exif_transpose(self.pixels) if upright else self.pixels, mode="RGB")


def read_image(path: Path) -> SourceImage:
    """Read and fully decode an image; ``BadInput`` when it is missing or unreadable."""
    try:
        data = path.read_bytes()
        pixels = Image.open(io.BytesIO(data))
        pixels.load()
    except FileNotFoundError:
        raise BadInput(f"{path}: missing image") from None
    except OSError as error:
        raise BadInput(f"{path}: unreadable image ({error})") from None
    return SourceImage(path=path, data=data, pixels=pixels)


def read_json(path: Path, *, encodings: tuple[str, ...] = ("utf-8",)) -> Any:
    """Parse a JSON file, trying each text encoding in turn; ``BadInput`` naming the file otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise BadInput(f"{path}: unreadable ({error.strerror})") from None
    for encoding in encodings:
        try:
            return json.loads(raw.decode(encoding))
        except UnicodeDecodeError:
            continue
        except json.JSONDecodeError as error:
            raise BadInput(f"{path}: malformed JSON ({error})") from None
    raise BadInput(f"{path}: not text in {' or '.join(encodings)}")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every converter shares: where to write, the held-out split, skipping bad input."""
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="dataset folder to write")
    parser.add_argument("--holdout", metavar="SPLIT", help="publish this split without masks (e.g. test)")
    parser.add_argument("--holdout-dir", type=Path, metavar="DIR", help="where the held-out ground truth goes")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad inputs, convert the rest, report them")


def convert_llmseg40k(
    annotations: Path,
    images_root: Path,
    out: Path,
    *,
    holdout: str | None = None,
    holdout_dir: Path | None = None,
    skip_bad: bool = False,
) -> Conversion:
    """Convert every split file found in ``annotations``; see the module docstring for the layout."""
    conversion = Conversion()
    splits: dict[str, Iterator[Sample]] = {}
    for split in SPLITS:
        path = Path(annotations) / f"{split}.json"
        if not path.is_file():
            continue
        try:
            entries = _split_entries(path)
        except BadInput as error:
            if not skip_bad:
                raise
            conversion.skipped.append(str(error))
            continue
        splits[split] = _split_samples(split, path, entries, Path(images_root), conversion.skipped, skip_bad)
    if not splits:
        raise ValueError(f"{annotations}: no {', '.join(f'{s}.json' for s in SPLITS)} to convert")
    conversion.rows = write_dataset(
        out,
        splits,
        title="LLM-Seg40K",
        description=(
            "LLM-Seg40K (Wang & Ke, 2024): reasoning-segmentation questions on COCO (LVIS) and EgoObjects "
            "images, converted to the llmseg common format by `python -m llmseg.data convert-llmseg40k`. "
            "Images keep the licences of COCO and EgoObjects."
        ),
        holdout=holdout,
        holdout_dir=holdout_dir,
    )
    return conversion


def _split_entries(path: Path) -> dict[str, Any]:
    entries = read_json(path)
    if not isinstance(entries, dict):
        raise BadInput(f"{path}: expected an object keyed by image file name")
    return entries


def _split_samples(
    split: str, path: Path, entries: dict[str, Any], images_root: Path, skipped: list[str], skip_bad: bool
) -> Iterator[Sample]:
    """Samples of one split, image by image; a bad image or qa pair is skipped or raised."""
    # Closed on error too, so the error line starts on a fresh line; no bar when stderr is not a terminal.
    with tqdm(entries.items(), desc=f"LLM-Seg40K {split}", unit="image", disable=None) as progress:
        for name, entry in progress:
            try:
                samples, bad_pairs = _image_samples(path, name, entry, images_root)
            except BadInput as error:
                if not skip_bad:
                    raise
                skipped.append(str(error))
                continue
            if bad_pairs and not skip_bad:
                raise bad_pairs[0]
            skipped.extend(str(error) for error in bad_pairs)
            yield from samples


def _image_samples(path: Path, name: str, entry: Any, images_root: Path) -> tuple[list[Sample], list[BadInput]]:
    """One image's samples, and the qa pairs that could not be converted."""
    where = f"{path} [{name}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("qa_pairs"), list):
        raise BadInput(f'{where}: expected an object with a "qa_pairs" list')
    source = entry.get("from_dataset")
    if source not in IMAGE_FOLDERS:
        raise BadInput(f'{where}: "from_dataset" must be one of {", ".join(IMAGE_FOLDERS)}, got {source!r}')
    image = read_image(images_root / IMAGE_FOLDERS[source] / name)
    stem = Path(name).stem
    samples: list[Sample] = []
    bad: list[BadInput] = []
    stored: bytes | None = None
    size = image.raw_size
    for index, pair in enumerate(entry["qa_pairs"]):
        pair_where = f"{where} qa pair {index}"
        try:
            question, answer, mask = _qa_pair(pair, pair_where)
            if stored is None:  # the first mask tells which way up the annotators saw the image
                upright = mask.shape != image.raw_size and mask.shape == image.upright_size
                size = image.upright_size if upright else image.raw_size
                stored = image.stored(upright=upright)
            if mask.shape != size:
                raise BadInput(
                    f"{pair_where}: mask is {mask.shape[0]}x{mask.shape[1]}, the image is {size[0]}x{size[1]}"
                )
        except BadInput as error:
            bad.append(error)
            continue
        samples.append(
            Sample(
                id=f"{stem}-{index}",
                image=stored,
                image_id=stem,
                query=question,
                answer=answer,
                mask=mask,
                source=source,
                tags=[source] + ([] if mask.any() else ["no-target"]),
                height=size[0],
                width=size[1],
            )
        )
    return samples, bad


def _qa_pair(pair: Any, where: str) -> tuple[str, str, Any]:
    if not isinstance(pair, dict) or not isinstance(pair.get("question"), str):
        raise BadInput(f'{where}: expected an object with a "question" string')
    answer = pair.get("answer", "")
    if not isinstance(answer, str):
        raise BadInput(f'{where}: "answer" must be a string')
    try:
        mask = rle.decode(pair.get("rle_seg"))
    except ValueError as error:
        raise BadInput(f'{where}: bad "rle_seg" ({error})') from None
    return pair["question"], answer, mask


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``convert-llmseg40k`` to ``python -m llmseg.data``."""
    parser = subparsers.add_parser(
        "convert-llmseg40k",
        help="convert the LLM-Seg40K release to the common format",
        description="Convert LLM-Seg40K (train/validation/test.json + COCO and EgoObjects images).",
    )
    parser.add_argument("--annotations", required=True, type=Path, metavar="DIR", help="folder with the split JSONs")
    parser.add_argument(
        "--images-root", required=True, type=Path, metavar="DIR", help="holds coco/train2017 and ego_objects/images"
    )
    add_output_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    conversion = convert_llmseg40k(
        args.annotations,
        args.images_root,
        args.out,
        holdout=args.holdout,
        holdout_dir=args.holdout_dir,
        skip_bad=args.skip_bad,
    )
    print(conversion.summary(args.out))
    return 0
