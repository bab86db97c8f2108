"""The one dispatcher behind ``python -m llmseg`` and ``python -m llmseg.data``.

Each command lives in its own module, which adds its sub-command with ``register(subparsers)``
and sets ``run`` (args -> exit code) as the parser default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType


def run_command(prog: str, description: str, modules: Sequence[ModuleType], argv: list[str] | None = None) -> int:
    """Parse ``argv`` against the modules' sub-commands and run the chosen one.

    A ``ValueError`` (a problem the user caused) prints one ``error:`` line and returns 2.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in modules:
        module.register(subparsers)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
