"""What the converters of released benchmarks share: reading inputs, the error and skip policy, writing.

A converter (``llmseg40k``, ``reasonseg``, ``reasonseg_hub``) only turns its release's layout
into ``Sample`` rows. Everything around that lives here, so every converter reports bad input
the same way (``BadInput``: one line naming the file), skips it the same way (``--skip-bad``),
stores EXIF-rotated images the same way and writes through ``llmseg.data.writer`` with the same
``--out``/``--holdout``/``--holdout-dir`` options and the same report.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from PIL import Image, ImageOps
from tqdm import tqdm

from llmseg.data.writer import Sample, png_bytes, write_dataset

_ORIENTATION = Image.ExifTags.Base.Orientation
_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
Item = TypeVar("Item")


class BadInput(ValueError):
    """An input file is missing or malformed; the message names it. ``--skip-bad`` skips what raised it."""


class OutputOptions(TypedDict, total=False):
    """The keyword options every ``convert_*`` function takes, as the CLI's shared options give them."""

    holdout: str | None
    holdout_dir: Path | None
    skip_bad: bool


@dataclass
class Conversion:
    """What a converter wrote (rows per split) and what it skipped (one line each).

    It also carries the skip policy while the conversion runs: without ``skip_bad`` the first
    ``BadInput`` stops everything (nothing is written for that split), with it the error is
    recorded and the rest converted.
    """

    skip_bad: bool = False
    rows: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def reject(self, error: BadInput) -> None:
        """Raise ``error``, or record it when bad input is to be skipped."""
        if not self.skip_bad:
            raise error
        self.skipped.append(str(error))

    def samples(
        self, items: Iterable[Item], convert: Callable[[Item], Iterable[Sample]], desc: str
    ) -> Iterator[Sample]:
        """The samples of each item (an image, a row) in turn; an item that raises ``BadInput`` is rejected."""
        # Closed on error too, so the error line starts on a fresh line; no bar when stderr is not a terminal.
        with tqdm(items, desc=desc, unit="image", disable=None) as progress:
            for item in progress:
                try:
                    samples = list(convert(item))
                except BadInput as error:
                    self.reject(error)
                    continue
                yield from samples

    def write(
        self,
        out: Path,
        splits: Mapping[str, Iterable[Sample]],
        *,
        title: str,
        description: str,
        options: OutputOptions,
    ) -> Conversion:
        """Write ``splits`` (consumed lazily) with the holdout options; record the rows per split."""
        self.rows = write_dataset(
            out,
            splits,
            title=title,
            description=description,
            holdout=options.get("holdout"),
            holdout_dir=options.get("holdout_dir"),
        )
        return self

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

    def drawn_upright(self, mask_shape: tuple[int, ...]) -> bool:
        """Whether a mask of this shape was drawn on the upright image: only if the raw size cannot fit it."""
        return mask_shape != self.raw_size and mask_shape == self.upright_size

    def size(self, *, upright: bool) -> tuple[int, int]:
        return self.upright_size if upright else self.raw_size

    def stored(self, *, upright: bool) -> bytes:
        """Bytes to store so that every reader sees the pixels the annotations were drawn on.

        ``datasets`` applies an EXIF orientation when it decodes and most other readers do not,
        so a file carrying one is re-encoded (PNG, lossless) in the chosen orientation without it.
        """
        if self.pixels.getexif().get(_ORIENTATION) in (None, 1):
            return self.data
        return png_bytes(ImageOps.exif_transpose(self.pixels) if upright else self.pixels, mode="RGB")


def decode_image(data: bytes, where: str) -> SourceImage:
    """Fully decode an image's bytes; ``BadInput`` naming ``where`` when they are not an image."""
    try:
        pixels = Image.open(io.BytesIO(data))
        pixels.load()
    except OSError as error:
        raise BadInput(f"{where}: unreadable image ({error})") from None
    return SourceImage(data=data, pixels=pixels)


def read_image(path: Path) -> SourceImage:
    """Read and fully decode an image file; ``BadInput`` when it is missing or unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: missing image") from None
    except OSError as error:
        raise BadInput(f"{path}: unreadable image ({error})") from None
    return decode_image(data, str(path))


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


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    *,
    help: str,
    description: str,
    run: Callable[[argparse.Namespace], int],
) -> argparse._ArgumentGroup:
    """A converter's subcommand with the shared output options; returns the group for its input options."""
    parser = subparsers.add_parser(name, help=help, description=description)
    inputs = parser.add_argument_group("input")
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True, type=Path, metavar="DIR", help="dataset folder to write")
    output.add_argument("--holdout", metavar="SPLIT", help="publish this split without masks (e.g. test)")
    output.add_argument("--holdout-dir", type=Path, metavar="DIR", help="where the held-out ground truth goes")
    output.add_argument("--skip-bad", action="store_true", help="skip bad inputs, convert the rest, report them")
    parser.set_defaults(run=run)
    return inputs


def output_options(args: argparse.Namespace) -> OutputOptions:
    """The shared options as parsed, to pass on to a ``convert_*`` function."""
    return OutputOptions(holdout=args.holdout, holdout_dir=args.holdout_dir, skip_bad=args.skip_bad)


def print_summary(conversion: Conversion, out: Path) -> int:
    """Print what was written and skipped; the exit code of a finished conversion."""
    print(conversion.summary(out))
    return 0
