"""The one dispatcher behind ``llmseg``, ``python -m llmseg`` and ``python -m llmseg.data``.

Each command lives in its own module, which adds its sub-command with ``register(subparsers)``
and sets ``run`` (args -> exit code) as the parser default. A command with a command line of its
own (``eval``, ``leaderboard``, ``datagen``) is a ``Forward``: it gets the arguments after its name.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Forward:
    """A command whose own ``main(argv) -> int`` parses the rest: ``llmseg eval ARGS`` is ``python -m eval ARGS``.

    ``module`` is imported only when the command runs, so the model's command line loads the
    leaderboard (a layer above it) or the data generator only when asked to.
    """

    name: str
    help: str
    module: str

    def run(self, argv: list[str]) -> int:
        return int(importlib.import_module(self.module).main(argv) or 0)


def run_command(
    prog: str,
    description: str,
    modules: Sequence[ModuleType],
    argv: list[str] | None = None,
    *,
    forwards: Sequence[Forward] = (),
) -> int:
    """Parse ``argv`` against the modules' sub-commands and run the chosen one (or hand it to a forward).

    A ``ValueError`` (a problem the user caused) prints one ``error:`` line and returns 2.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    for forward in forwards:
        if argv[:1] == [forward.name]:
            return forward.run(argv[1:])
    parser = argparse.ArgumentParser(prog=prog, description=description)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in modules:
        module.register(subparsers)
    for forward in forwards:  # listed in --help only: the loop above runs them
        subparsers.add_parser(forward.name, help=forward.help, add_help=False)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
