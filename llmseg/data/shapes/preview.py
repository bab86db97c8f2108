"""Draw a grid of dataset samples (image with its target mask outlined, question, answer, tags) to PNG.

Reads any split in the common data format, so it shows what was actually written:
``python -m llmseg.data.shapes.preview --data data/shapes-mini --split validation --out docs/shapes_samples.png``
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from eval.contract import load_split

CELL = 300  # pixels a side for each sample's picture
TEXT_LINES = 7
LINE_HEIGHT = 15
WRAP = 46  # characters per text line


def overlay(image: Image.Image, mask: Image.Image | None) -> np.ndarray:
    """HWC uint8 RGB: the image, target pixels lightened, the target outlined in white and black."""
    picture = np.asarray(image.convert("RGB")).copy()
    if mask is None:
        return picture
    target = np.asarray(mask.convert("L")) > 127
    picture[target] = (0.55 * picture[target] + 0.45 * 255).astype(np.uint8)
    contours, _ = cv2.findContours(target.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(picture, contours, -1, (0, 0, 0), 3)
    cv2.drawContours(picture, contours, -1, (255, 255, 255), 1)
    return picture


def _cell(row: dict[str, Any], font: ImageFont.FreeTypeFont) -> Image.Image:
    picture = Image.fromarray(overlay(row["image"], row.get("mask")))
    picture.thumbnail((CELL, CELL))
    cell = Image.new("RGB", (CELL, CELL + TEXT_LINES * LINE_HEIGHT + 8), "white")
    cell.paste(picture, ((CELL - picture.width) // 2, (CELL - picture.height) // 2))
    mask = row.get("mask")
    empty = mask is not None and not (np.asarray(mask.convert("L")) > 127).any()
    lines = textwrap.wrap("Q: " + row["query"], WRAP) + textwrap.wrap("A: " + row["answer"], WRAP)
    lines = lines[: TEXT_LINES - 1] + ["[" + ", ".join(row["tags"]) + "]" + ("  (empty mask)" if empty else "")]
    draw = ImageDraw.Draw(cell)
    for i, line in enumerate(lines):
        draw.text((4, CELL + 4 + i * LINE_HEIGHT), line, fill=(0, 0, 0), font=font)
    return cell


def draw_grid(rows: Sequence[dict[str, Any]], columns: int = 4) -> Image.Image:
    """Lay the samples' cells out in a grid, ``columns`` wide."""
    if not rows:
        raise ValueError("no samples to draw: the split is empty")
    font = ImageFont.load_default(size=12)
    cells = [_cell(row, font) for row in rows]
    width, height = cells[0].size
    grid_rows = -(-len(cells) // columns)
    grid = Image.new("RGB", (columns * (width + 6) + 6, grid_rows * (height + 6) + 6), (200, 200, 200))
    for i, cell in enumerate(cells):
        grid.paste(cell, (6 + (i % columns) * (width + 6), 6 + (i // columns) * (height + 6)))
    return grid


def pick_rows(split: Sequence[dict[str, Any]] | Any, count: int) -> list[dict[str, Any]]:
    """Up to ``count`` rows: the first row of each tag not yet shown, then the next rows in order,
    so a small grid shows every kind of question."""
    tags = split["tags"]
    chosen: list[int] = []
    for tag in dict.fromkeys(tag for row_tags in tags for tag in row_tags):
        if len(chosen) < count and not any(tag in tags[i] for i in chosen):
            chosen.append(next(i for i, row_tags in enumerate(tags) if tag in row_tags))
    chosen += [i for i in range(len(tags)) if i not in chosen][: count - len(chosen)]
    return [split[i] for i in sorted(chosen)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmseg.data.shapes.preview", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset folder or Hub id")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--out", required=True, type=Path, help="PNG file to write")
    parser.add_argument("--count", type=int, default=16, help="samples to draw: one per tag first, then in order")
    parser.add_argument("--columns", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        if args.count < 1 or args.columns < 1:
            raise ValueError("--count and --columns must be at least 1")
        split = load_split(args.data, args.split, require_ground_truth=False)
        rows = pick_rows(split, args.count)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        draw_grid(rows, args.columns).save(args.out)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
