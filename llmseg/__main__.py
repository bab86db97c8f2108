"""``python -m llmseg <command>``: the model's command line (predict, prepare, train, convert-official)."""

from __future__ import annotations

import sys

from llmseg import predict, prepare, train
from llmseg.commands import run_command
from llmseg.model import convert_official

COMMANDS = (predict, prepare, train, convert_official)


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m llmseg", "the model's command line", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
