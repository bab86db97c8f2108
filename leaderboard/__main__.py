"""``python -m leaderboard submit|show|compare|per-sample|benchmarks``: submit, show, compare, download.

``submit --json`` prints exactly one JSON object: ``{"status": "scored", ...}`` (exit 0) or
``{"status": "rejected", "error": ...}`` (exit 2); a setup problem (no data, bad settings) is
``{"status": "error", "error": ...}`` (exit 2). Without ``--json`` errors are one line
``error: <reason>`` on stderr. Settings not given as flags come from the environment
(``LLMSEG_LEADERBOARD_*``, see ``leaderboard.settings``). With ``--benchmarks FILE`` several
benchmarks share one database; ``--benchmark NAME`` picks one (default: the file's first).

``compare A B`` (submission ids or ``baseline:NAME``) prints the paired gIoU and cIoU differences
with 95% intervals and p-values, overall and per tag (``--json``: one object with ``giou_diff``,
``giou_ci95``, ``giou_p``, ``ciou_diff``, ``ciou_ci95``, ``ciou_p``, ``by_tag``).
``per-sample ID --user NAME --out FILE`` writes one's own submission's per-sample IoU as CSV. A
refusal (unknown id, different benchmarks, someone else's submission, a private benchmark) is
one sentence and exit code 2; with ``--json`` it is ``{"status": "refused", "error": ...}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from .benchmarks import Benchmark
from .board import Leaderboard
from .per_sample import Refused
from .reported import REPORTED_LABEL
from .settings import DEFAULT_DATA, LeaderboardSettings
from .significance import format_p
from .submission import CHECKPOINT_SELECTIONS, PROTOCOLS, SubmissionRejected


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m leaderboard", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    submit = commands.add_parser("submit", help="score a predictions file and add it to the leaderboard")
    submit.add_argument("file", help='JSON Lines predictions file, one {"id": ..., "mask": RLE} per sample')
    submit.add_argument("--model-name", required=True, help="the name shown in the table")
    submit.add_argument("--user", required=True, help="who submits (the Hugging Face login on a Space)")
    submit.add_argument("--link", help="paper, code or model page (http or https)")
    submit.add_argument("--note", help="a short free-text note")
    declared = submit.add_argument_group("declared protocol (shown in the table, not verified)")
    declared.add_argument(
        "--protocol", choices=PROTOCOLS, help="zero-shot: not trained on this benchmark's training data (default other)"
    )
    declared.add_argument("--trained-on", help='training data, e.g. "ReasonSeg train + LLM-Seg40K train"')
    declared.add_argument(
        "--checkpoint-selection",
        choices=CHECKPOINT_SELECTIONS,
        help="the split the checkpoint was chosen on; test is allowed and flagged (default unknown)",
    )
    declared.add_argument("--params", help="parameter count, e.g. 7e9 or 7B")
    declared.add_argument("--code", help="link to the code (http or https)")
    declared.add_argument("--paper", help="link to the paper (http or https)")
    _add_location(submit)
    submit.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")

    show = commands.add_parser("show", help="print the table (and the published results)")
    _add_location(show)
    show.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    show.add_argument("--reported-csv", metavar="FILE", help="also write the published-results table as CSV")
    show.add_argument("--all", action="store_true", help="every submission, not only the best per model")
    show.add_argument(
        "--protocol", action="append", choices=PROTOCOLS, help="only submissions with this protocol (repeatable)"
    )
    show.add_argument(
        "--checkpoint-selection",
        action="append",
        choices=CHECKPOINT_SELECTIONS,
        help="only submissions whose checkpoint was chosen this way (repeatable)",
    )

    compare = commands.add_parser("compare", help="paired significance of two submissions' difference")
    compare.add_argument("a", help="a submission id (the table's id column) or baseline:NAME")
    compare.add_argument("b", help="the submission or baseline:NAME it is compared with (the difference is A - B)")
    compare.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples and permutations")
    compare.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same result")
    _add_location(compare)
    compare.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    per_sample = commands.add_parser("per-sample", help="download your own submission's per-sample IoU as CSV")
    per_sample.add_argument("id", help="the submission id (the table's id column)")
    per_sample.add_argument("--user", required=True, help="who you are: the submission's submitter")
    per_sample.add_argument("--out", required=True, metavar="FILE", help="CSV file to write (id, tags, iou)")
    _add_location(per_sample, pick_benchmark=False)

    listing = commands.add_parser("benchmarks", help="list the benchmarks this leaderboard scores")
    _add_location(listing, pick_benchmark=False)
    return parser


def _add_location(parser: argparse.ArgumentParser, *, pick_benchmark: bool = True) -> None:
    parser.add_argument("--db", help="SQLite file (default: leaderboard-data/leaderboard.sqlite)")
    parser.add_argument("--data", help="held-out dataset folder or Hub dataset id (default: data/shapes-mini-heldout)")
    parser.add_argument("--split", help="split scored against (default: test)")
    parser.add_argument(
        "--benchmarks", metavar="FILE", help="JSON or YAML file listing several benchmarks (replaces --data/--split)"
    )
    if pick_benchmark:
        parser.add_argument("--benchmark", metavar="NAME", help="which benchmark (default: the file's first)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet()
    wants_json = args.command in ("submit", "compare") and args.json
    try:
        if args.benchmarks and (args.data or args.split):
            raise ValueError("give --benchmarks or --data/--split, not both: the file gives each benchmark's data")
        settings = LeaderboardSettings.from_env(
            db_path=args.db, data=args.data, split=args.split, benchmarks_file=args.benchmarks
        )
        if args.command == "benchmarks":  # reads the file only: no ground truth to load
            return _list_benchmarks(settings.benchmarks())
        _check_default_data(settings)
        board = Leaderboard(settings)
        if args.command == "submit":
            return _submit(board, args)
        if args.command == "compare":
            return _compare(board, args)
        if args.command == "per-sample":
            return _per_sample(board, args)
        return _show(board, args)
    except (ValueError, OSError) as error:
        status = (
            "rejected"
            if isinstance(error, SubmissionRejected)
            else "refused"
            if isinstance(error, Refused)
            else "error"
        )
        return _fail(status, str(error), as_json=wants_json)


def _check_default_data(settings: LeaderboardSettings) -> None:
    """The default held-out data is a folder of the project checkout; elsewhere say so before creating anything."""
    if settings.benchmarks_file is None and settings.data == DEFAULT_DATA and not Path(DEFAULT_DATA).is_dir():
        raise ValueError(
            f"the default held-out data {DEFAULT_DATA} is a folder of the project checkout and is not here: "
            "run from the checkout, or pass --data (or set LLMSEG_LEADERBOARD_DATA) with a dataset folder or Hub id"
        )


def _submit(board: Leaderboard, args: argparse.Namespace) -> int:
    result = board.submit(
        args.file,
        model_name=args.model_name,
        user=args.user,
        link=args.link,
        note=args.note,
        benchmark=args.benchmark,
        protocol=args.protocol,
        trained_on=args.trained_on,
        checkpoint_selection=args.checkpoint_selection,
        params=args.params,
        code=args.code,
        paper=args.paper,
    )
    if args.json:
        _print_json(result.to_dict())
    else:
        rank = f", rank {result.rank}" if result.rank is not None else ""
        print(
            f"scored submission #{result.id} ({result.model_name}): gIoU {100 * result.giou:.2f}, "
            f"cIoU {100 * result.ciou:.2f} on {result.n} samples{rank}"
            + (f" of {result.benchmark}" if len(board.benchmarks) > 1 else "")
        )
    return 0


def _show(board: Leaderboard, args: argparse.Namespace) -> int:
    benchmark = board.benchmark(args.benchmark)
    filters = {"protocols": args.protocol, "checkpoint_selections": args.checkpoint_selection}
    table = board.table(show_all=args.all, markdown=False, benchmark=benchmark.name, **filters)
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 60):
        if len(board.benchmarks) > 1:
            print(f"benchmark {benchmark.name} ({benchmark.data}, split {benchmark.split})")
        print(table.to_string(index=False))
        chosen_on_test = table[table["checkpoint_selection"] == "test"]["model"].tolist()
        if chosen_on_test:
            print(f"\nflagged: checkpoint chosen on the test split: {', '.join(chosen_on_test)}")
        print(f"\nPublished ReasonSeg results ({REPORTED_LABEL}):")
        print(board.reported_table().to_string(index=False))
    if args.csv:
        board.to_csv(args.csv, show_all=args.all, benchmark=benchmark.name, **filters)
    if args.reported_csv:
        board.reported_to_csv(args.reported_csv)
    return 0


def _compare(board: Leaderboard, args: argparse.Namespace) -> int:
    result = board.compare(args.a, args.b, benchmark=args.benchmark, n_resamples=args.resamples, seed=args.seed)
    if args.json:
        _print_json(result)
    else:
        print(comparison_table(result))
    return 0


def comparison_table(result: dict[str, Any]) -> str:
    """The comparison as plain text: who against whom, then one row per subset, scores in percent."""
    lines = [
        f"A: {result['a']['label']}   B: {result['b']['label']}   benchmark {result['benchmark']}",
        f"differences A - B with 95% paired-bootstrap intervals; two-sided sign-flip p-values "
        f"({result['n_resamples']} resamples, seed {result['seed']})",
        "",
    ]
    header = f"{'subset':<16} {'n':>6}  {'gIoU A':>6} {'gIoU B':>6} {'diff':>6}  {'95% CI':<15} {'p':>6}  "
    header += f"{'cIoU A':>6} {'cIoU B':>6} {'diff':>6}  {'95% CI':<15} {'p':>6}"
    lines += [header, "-" * len(header)]
    for name, row in [("overall", result), *result["by_tag"].items()]:
        cells = [f"{name:<16} {row['n']:>6}"]
        for metric in ("giou", "ciou"):
            low, high = (100 * bound for bound in row[f"{metric}_ci95"])
            a, b, diff = (100 * row[f"{metric}_{part}"] for part in ("a", "b", "diff"))
            interval = f"[{low:+.2f}, {high:+.2f}]"
            cells.append(f"{a:>6.2f} {b:>6.2f} {diff:>+6.2f}  {interval:<15} {format_p(row[f'{metric}_p']):>6}")
        lines.append("  ".join(cells))
    return "\n".join(line.rstrip() for line in lines)


def _per_sample(board: Leaderboard, args: argparse.Namespace) -> int:
    frame = board.per_sample(args.id, user=args.user)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    print(f"wrote the per-sample IoU of submission #{str(args.id).removeprefix('#')} ({len(frame)} samples) to {out}")
    return 0


def _list_benchmarks(benchmarks: tuple[Benchmark, ...]) -> int:
    """One line per benchmark, the default first: name, data, split, the per-sample policy, description."""
    for benchmark in benchmarks:
        private = "per-sample private" if benchmark.private_per_sample else "per-sample to the submitter"
        description = f": {benchmark.description}" if benchmark.description else ""
        print(f"{benchmark.name}\t{benchmark.data}\t{benchmark.split}\t{private}{description}")
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
