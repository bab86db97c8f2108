"""``python -m llmseg.data <command>``: build datasets in the common format."""

from __future__ import annotations

import sys

from llmseg.commands import run_command
from llmseg.data import llmseg40k, reasonseg, shapes
from llmseg.data.shapes import anchors as shapes_anchors

COMMANDS = (llmseg40k, reasonseg, shapes, shapes_anchors)


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m llmseg.data", "build datasets in the common format", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
