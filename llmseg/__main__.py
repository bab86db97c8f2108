"""``python -m llmseg <command>``: the model's command line.

Each command lives in its own module, which adds its sub-command with ``register(subparsers)``
and sets ``run`` (args -> exit code) as the parser default.
"""

from __future__ import annotations

import argparse
import sys

from llmseg import predict, prepare, train
from llmseg.model import convert_official

COMMANDS = (predict, prepare, train, convert_official)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmseg", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(subparsers)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ValueError as error:  # user-caused problems: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
