"""``llmseg <command>``, or ``python -m llmseg <command>``: every command line of the project.

The model's (predict, prepare, train, convert-official), the dataset builders of
``python -m llmseg.data`` (convert-llmseg40k, convert-reasonseg, make-shapes, shapes-anchors), and, each with a
command line of its own, ``datagen`` (``python -m llmseg.datagen``), ``eval`` (``python -m eval``)
and ``leaderboard`` (``python -m leaderboard``). Like app.py this entry point sits on top of the
layers: it imports the leaderboard only when ``leaderboard`` runs, and nothing in llmseg/ imports it.
"""

from __future__ import annotations

import sys

from llmseg import predict, prepare, train
from llmseg.commands import Forward, run_command
from llmseg.data.__main__ import COMMANDS as DATA_COMMANDS
from llmseg.model import convert_official

COMMANDS = (predict, prepare, train, convert_official, *DATA_COMMANDS)
FORWARDS = (
    Forward("datagen", "grow an LLM-Seg40K-style dataset (select, describe, ask, write)", "llmseg.datagen.__main__"),
    Forward("eval", "score a predictions file against a dataset split", "eval.__main__"),
    Forward("leaderboard", "submit a predictions file, or print/export the tables", "leaderboard.__main__"),
)


def main(argv: list[str] | None = None, *, prog: str = "python -m llmseg") -> int:
    return run_command(prog, "LLM-Seg reasoning segmentation: every command", COMMANDS, argv, forwards=FORWARDS)


def console() -> int:
    """The ``llmseg`` console script (pyproject.toml's ``[project.scripts]``)."""
    return main(prog="llmseg")


if __name__ == "__main__":
    sys.exit(main())
