"""``python -m llmseg.data <command>``: build datasets in the common format.

Each data builder module contributes its sub-command through a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import sys

from llmseg.data import llmseg40k, reasonseg, shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmseg.data", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in (llmseg40k, reasonseg, shapes):
        module.register(subparsers)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ValueError as error:  # user-caused problems: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
