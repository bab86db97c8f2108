"""``convert-reasonseg``: LISA's ReasonSeg release -> common format, rasterised exactly as LISA does.

Layout: ``<root>/{train,val,test}/<name>.jpg`` each with ``<name>.json`` holding ``text`` (the
queries), ``is_sentence`` (long query or short phrase) and ``shapes`` (labelme polygons). ``val``
becomes the split ``validation``. Train keeps one sample per query, validation and test only the
first query (the standard protocol); id ``<image stem>-<query index>``; tags ``long``/``short``
and ``no-target`` when nothing is to be segmented (two test images have no polygon at all).
The Hub layout of the same data (``--hub``) is read by ``llmseg.data.reasonseg_hub``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Unpack

import cv2
import numpy as np

from llmseg.data import converter
from llmseg.data.converter import BadInput, Conversion, OutputOptions
from llmseg.data.reasonseg_hub import convert_reasonseg_hub
from llmseg.data.writer import Sample

# Release folder -> split name; validation and test score only the first query of each image.
SPLITS = {"train": "train", "val": "validation", "test": "test"}
FIRST_QUERY_ONLY = {"validation", "test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IGNORE_VALUE = 255  # pixels of a polygon whose label contains "ignore": excluded from scoring
TARGET_VALUE = 1
HELP = "convert LISA's ReasonSeg release to the common format"
DESCRIPTION = (
    "Convert ReasonSeg: LISA's release (--root: <root>/{train,val,test}/*.jpg + *.json, val becomes "
    "`validation`) or its Hub layout (--hub: one split, whose masks have lost the ignore regions)."
)


def rasterize(shapes: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """LISA's ``get_mask_from_json``: an HxW uint8 map, 1 = target, 255 = ignore, 0 = background.

    Polygons labelled "flag" are skipped; points are truncated to int32; each polygon's area is
    the pixel count of its outline (``polylines``, thickness 1) plus its fill, and polygons are
    drawn largest first so that smaller ones (often ignore regions inside targets) end on top.
    """
    kept, areas = [], []
    for shape in shapes:
        if shape["label"].lower() == "flag":
            continue
        points = np.array([shape["points"]], dtype=np.int32)
        canvas = np.zeros((height, width), dtype=np.uint8)
        cv2.polylines(canvas, points, True, 1, 1)
        cv2.fillPoly(canvas, points, 1)
        kept.append((shape["label"], points))
        areas.append(canvas.sum())
    label_map = np.zeros((height, width), dtype=np.uint8)
    for index in np.argsort(areas)[::-1]:
        label, points = kept[index]
        value = IGNORE_VALUE if "ignore" in label.lower() else TARGET_VALUE
        cv2.polylines(label_map, points, True, value, 1)
        cv2.fillPoly(label_map, points, value)
    return label_map


def convert_reasonseg(root: Path, out: Path, **options: Unpack[OutputOptions]) -> Conversion:
    """Convert every split folder found under ``root``; see the module docstring for the layout."""
    conversion = Conversion(skip_bad=options.get("skip_bad", False))
    splits = {
        split: conversion.samples(
            _stems(Path(root) / folder),
            lambda stem, split=split, folder=folder: _image_samples(split, Path(root) / folder, stem),
            desc=f"ReasonSeg {split}",
        )
        for folder, split in SPLITS.items()
        if (Path(root) / folder).is_dir()
    }
    if not splits:
        raise ValueError(f"{root}: no {', '.join(SPLITS)} folder to convert")
    return conversion.write(
        out,
        splits,
        title="ReasonSeg",
        description=(
            "ReasonSeg (Lai et al., LISA, 2024) converted to the llmseg common format by "
            "`python -m llmseg.data convert-reasonseg`: polygons rasterised as LISA's evaluation does, "
            "regions labelled `ignore` in the `ignore` column."
        ),
        options=options,
    )


def _stems(folder: Path) -> list[str]:
    """The images and annotation files of one split folder, by name (sorted)."""
    return sorted({path.stem for path in folder.iterdir() if path.suffix.lower() in (".json", *IMAGE_SUFFIXES)})


def _image_samples(split: str, folder: Path, stem: str) -> list[Sample]:
    annotation = folder / f"{stem}.json"
    images = [folder / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if not annotation.is_file():
        raise BadInput(f"{images[0]}: no annotation file {annotation.name} beside it")
    queries, is_sentence, shapes = _annotation(annotation)
    if not images:
        raise BadInput(f"{folder / (stem + '.jpg')}: missing image (annotated in {annotation})")
    image = converter.read_image(images[0])
    height, width = image.upright_size  # LISA reads with OpenCV, which applies the EXIF orientation
    label_map = rasterize(shapes, height, width)
    mask = label_map == TARGET_VALUE
    ignore = label_map == IGNORE_VALUE
    tags = ["long" if is_sentence else "short"] + ([] if mask.any() else ["no-target"])
    stored = image.stored(upright=True)
    return [
        Sample(
            id=f"{stem}-{index}",
            image=stored,
            image_id=stem,
            query=query,
            answer="",
            mask=mask,
            ignore=ignore if ignore.any() else None,
            source="reasonseg",
            tags=tags,
            height=height,
            width=width,
        )
        for index, query in enumerate(queries[:1] if split in FIRST_QUERY_ONLY else queries)
    ]


def _annotation(path: Path) -> tuple[list[str], bool, list[dict[str, Any]]]:
    """Queries, long-or-short flag and polygons of one annotation file, checked."""
    annotation = converter.read_json(path, encodings=("utf-8", "cp1252"))  # LISA falls back to cp1252 too
    if not isinstance(annotation, dict):
        raise BadInput(f"{path}: expected a JSON object")
    queries, is_sentence, shapes = annotation.get("text"), annotation.get("is_sentence"), annotation.get("shapes")
    if not isinstance(queries, list) or not queries or not all(isinstance(q, str) for q in queries):
        raise BadInput(f'{path}: "text" must be a non-empty list of queries')
    if not isinstance(is_sentence, bool):
        raise BadInput(f'{path}: "is_sentence" must be true or false')
    if not isinstance(shapes, list):
        raise BadInput(f'{path}: "shapes" must be a list of polygons')
    for index, shape in enumerate(shapes):
        if (
            not isinstance(shape, dict)
            or not isinstance(shape.get("label"), str)
            or not _is_polygon(shape.get("points"))
        ):
            raise BadInput(f'{path}: shape {index} needs a "label" string and "points" as [[x, y], ...]')
    return queries, is_sentence, shapes


def _is_polygon(points: Any) -> bool:
    return (
        isinstance(points, list)
        and len(points) > 0
        and all(
            isinstance(p, list)
            and len(p) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
            for p in points
        )
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``convert-reasonseg`` to ``python -m llmseg.data``."""
    inputs = converter.add_command(subparsers, "convert-reasonseg", help=HELP, description=DESCRIPTION, run=_run)
    layout = inputs.add_mutually_exclusive_group(required=True)
    layout.add_argument("--root", type=Path, metavar="DIR", help="LISA's release: holds train/, val/ and test/")
    layout.add_argument(
        "--hub", metavar="FOLDER_OR_ID", help="the Hub layout: Ricky06662/ReasonSeg_val or _test, or a local copy"
    )
    inputs.add_argument(
        "--split", choices=("validation", "test"), help="with --hub: the split it holds (default: from its name)"
    )


def _run(args: argparse.Namespace) -> int:
    options = converter.output_options(args)
    if args.hub is not None:
        conversion = convert_reasonseg_hub(args.hub, args.out, split=args.split, **options)
    elif args.split is not None:
        raise ValueError("--split goes with --hub: LISA's release names its splits by folder")
    else:
        conversion = convert_reasonseg(args.root, args.out, **options)
    return converter.print_summary(conversion, args.out)
