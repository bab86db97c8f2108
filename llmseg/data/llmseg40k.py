"""``convert-llmseg40k``: the LLM-Seg40K release (annotations + COCO/EgoObjects images) -> common format.

The release has one JSON per split (``train.json``, ``validation.json``, ``test.json``), a dict
keyed by image file name: ``{"from_dataset": "coco" | "ego_objects", "qa_pairs": [{"question",
"answer", "rle_seg": {"size": [h, w], "counts": str}}]}``. Images live at
``<root>/coco/train2017/<name>`` or ``<root>/ego_objects/images/<name>``. One row per qa pair, id
``<image file stem>-<index of the pair>``; tags: the source, and ``no-target`` for an empty mask.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Unpack

from eval import rle
from llmseg.data import converter
from llmseg.data.converter import BadInput, Conversion, OutputOptions
from llmseg.data.writer import Sample

SPLITS = ("train", "validation", "test")
IMAGE_FOLDERS = {"coco": Path("coco/train2017"), "ego_objects": Path("ego_objects/images")}
HELP = "convert the LLM-Seg40K release to the common format"
DESCRIPTION = "Convert LLM-Seg40K (train/validation/test.json + COCO and EgoObjects images)."


def convert_llmseg40k(annotations: Path, images_root: Path, out: Path, **options: Unpack[OutputOptions]) -> Conversion:
    """Convert every split file found in ``annotations``; see the module docstring for the layout."""
    conversion = Conversion(skip_bad=options.get("skip_bad", False))
    splits: dict[str, Iterator[Sample]] = {}
    for split in SPLITS:
        path = Path(annotations) / f"{split}.json"
        if not path.is_file():
            continue
        try:
            entries = _split_entries(path)
        except BadInput as error:
            conversion.reject(error)
            continue
        splits[split] = conversion.samples(
            entries.items(),
            lambda entry, path=path: _image_samples(path, *entry, Path(images_root), conversion),
            desc=f"LLM-Seg40K {split}",
        )
    if not splits:
        raise ValueError(f"{annotations}: no {', '.join(f'{s}.json' for s in SPLITS)} to convert")
    return conversion.write(
        out,
        splits,
        title="LLM-Seg40K",
        description=(
            "LLM-Seg40K (Wang & Ke, 2024): reasoning-segmentation questions on COCO (LVIS) and EgoObjects "
            "images, converted to the llmseg common format by `python -m llmseg.data convert-llmseg40k`. "
            "Images keep the licences of COCO and EgoObjects."
        ),
        options=options,
    )


def _split_entries(path: Path) -> dict[str, Any]:
    entries = converter.read_json(path)
    if not isinstance(entries, dict):
        raise BadInput(f"{path}: expected an object keyed by image file name")
    return entries


def _image_samples(path: Path, name: str, entry: Any, images_root: Path, conversion: Conversion) -> list[Sample]:
    """One image's samples; a qa pair that cannot be converted is rejected on its own."""
    where = f"{path} [{name}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("qa_pairs"), list):
        raise BadInput(f'{where}: expected an object with a "qa_pairs" list')
    source = entry.get("from_dataset")
    if source not in IMAGE_FOLDERS:
        raise BadInput(f'{where}: "from_dataset" must be one of {", ".join(IMAGE_FOLDERS)}, got {source!r}')
    image = converter.read_image(images_root / IMAGE_FOLDERS[source] / name)
    stem = Path(name).stem
    samples: list[Sample] = []
    stored: bytes | None = None
    size = image.raw_size
    for index, pair in enumerate(entry["qa_pairs"]):
        pair_where = f"{where} qa pair {index}"
        try:
            question, answer, mask = _qa_pair(pair, pair_where)
            if stored is None:  # the first mask tells which way up the annotators saw the image
                upright = image.drawn_upright(mask.shape)
                size, stored = image.size(upright=upright), image.stored(upright=upright)
            if mask.shape != size:
                raise BadInput(
                    f"{pair_where}: mask is {mask.shape[0]}x{mask.shape[1]}, the image is {size[0]}x{size[1]}"
                )
        except BadInput as error:
            conversion.reject(error)
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
    return samples


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
    inputs = converter.add_command(subparsers, "convert-llmseg40k", help=HELP, description=DESCRIPTION, run=_run)
    inputs.add_argument("--annotations", required=True, type=Path, metavar="DIR", help="folder with the split JSONs")
    inputs.add_argument(
        "--images-root", required=True, type=Path, metavar="DIR", help="holds coco/train2017 and ego_objects/images"
    )


def _run(args: argparse.Namespace) -> int:
    conversion = convert_llmseg40k(args.annotations, args.images_root, args.out, **converter.output_options(args))
    return converter.print_summary(conversion, args.out)
