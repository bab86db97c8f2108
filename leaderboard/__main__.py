"""``python -m leaderboard submit|show``: submit a predictions file, or print/export the tables.

``submit --json`` prints exactly one JSON object: ``{"status": "scored", ...}`` (exit 0) or
``{"status": "rejected", "error": ...}`` (exit 2); a setup problem (no data, bad settings) is
``{"status": "error", "error": ...}`` (exit 2). Without ``--json`` errors are one line
``error: <reason>`` on stderr. Settings not given as flags come from the environment
(``LLMSEG_LEADERBOARD_*``, see ``leaderboard.settings``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import pandas as pd

from .board import Leaderboard
from .reported import REPORTED_LABEL
from .settings import LeaderboardSettings
from .submission import SubmissionRejected


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m leaderboard", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    submit = commands.add_parser("submit", help="score a predictions file and add it to the leaderboard")
    submit.add_argument("file", help='JSON Lines predictions file, one {"id": ..., "mask": RLE} per sample')
    submit.add_argument("--model-name", required=True, help="the name shown in the table")
    submit.add_argument("--user", required=True, help="who submits (the Hugging Face login on a Space)")
    submit.add_argument("--link", help="paper, code or model page (http or https)")
    submit.add_argument("--note", help="a short free-text note")
    _add_location(submit)
    submit.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")

    show = commands.add_parser("show", help="print the table (and the published results)")
    _add_location(show)
    show.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    show.add_argument("--reported-csv", metavar="FILE", help="also write the published-results table as CSV")
    show.add_argument("--all", action="store_true", help="every submission, not only the best per model")
    return parser


def _add_location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="SQLite file (default: leaderboard-data/leaderboard.sqlite)")
    parser.add_argument("--data", help="held-out dataset folder or Hub dataset id (default: data/shapes-mini-heldout)")
    parser.add_argument("--split", help="split scored against (default: test)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet()
    wants_json = args.command == "submit" and args.json
    try:
        settings = LeaderboardSettings.from_env(db_path=args.db, data=args.data, split=args.split)
        board = Leaderboard(settings)
        if args.command == "submit":
            return _submit(board, args)
        return _show(board, args)
    except (ValueError, OSError) as error:
        status = "rejected" if isinstance(error, SubmissionRejected) else "error"
        return _fail(status, str(error), as_json=wants_json)


def _submit(board: Leaderboard, args: argparse.Namespace) -> int:
    result = board.submit(args.file, model_name=args.model_name, user=args.user, link=args.link, note=args.note)
    if args.json:
        _print_json(result.to_dict())
    else:
        rank = f", rank {result.rank}" if result.rank is not None else ""
        print(
            f"scored submission #{result.id} ({result.model_name}): gIoU {100 * result.giou:.2f}, "
            f"cIoU {100 * result.ciou:.2f} on {result.n} samples{rank}"
        )
    return 0


def _show(board: Leaderboard, args: argparse.Namespace) -> int:
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 60):
        print(board.table(show_all=args.all, markdown=False).to_string(index=False))
        print(f"\nPublished ReasonSeg results ({REPORTED_LABEL}):")
        print(board.reported_table().to_string(index=False))
    if args.csv:
        board.to_csv(args.csv, show_all=args.all)
    if args.reported_csv:
        board.reported_to_csv(args.reported_csv)
    return 0


def _fail(status: str, message: str, *, as_json: bool) -> int:
    sentence = " ".join(message.split())
    if as_json:
        _print_json({"status": status, "error": sentence})
    else:
        print(f"error: {sentence}", file=sys.stderr)
    return 2


def _print_json(value: dict[str, Any]) -> None:
    print(json.dumps(value))


def _quiet() -> None:
    """Keep stdout to the one promised result: no progress bars or info logs from ``datasets``."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
