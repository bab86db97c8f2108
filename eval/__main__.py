"""``python -m eval PREDICTIONS --data DIR_OR_HUB_ID --split NAME``: score a predictions file.

Prints a table (or, with ``--json``, exactly one JSON object) on stdout. An invalid file or split
exits with status 2 and one line ``error: <reason>`` on stderr. The split's ground truth is read
through a cache (``--cache-dir``, default ``$LLMSEG_EVAL_CACHE`` or ``~/.cache/llmseg/ground-truth``),
so only the first run on a split decodes its PNG masks.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys

from eval.cache import CACHE_DIR_VARIABLE, default_cache_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.splitlines()[0])
    parser.add_argument("predictions", help='JSON Lines file, one {"id": ..., "mask": RLE} object per sample')
    parser.add_argument("--data", required=True, help="dataset folder or Hub dataset id (HF_TOKEN for a private one)")
    parser.add_argument("--split", required=True, help="split to score against, e.g. validation")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--per-sample-csv", metavar="FILE", help="also write one row per sample to FILE")
    parser.add_argument("--nciou", action="store_true", help="also compute ncIoU (masks resized to 1024x1024)")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="resamples for 95%% intervals, e.g. 1000 as the leaderboard uses (default 0: no intervals, faster)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help=f"ground-truth cache folder (default: ${CACHE_DIR_VARIABLE} or ~/.cache/llmseg/ground-truth)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="decode the ground truth without reading or writing a cache"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Progress bars and warnings would break the promise of one error line on stderr (read when
    # datasets is imported, which only a Hub id or a folder without a card's file list needs).
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    from eval.evaluate import References, evaluate
    from eval.predictions import read_predictions

    # What is imported by now lives until exit. Frozen, it is not walked again by each collection that
    # building a split's worth of small dicts sets off (about 4% of a warm run on 5,000 samples).
    gc.freeze()

    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    try:
        predictions = read_predictions(args.predictions)  # a bad file fails before the data loads
        references = References.from_data(args.data, args.split, cache_dir=cache_dir)
        report = evaluate(predictions, references, nciou=args.nciou, n_bootstrap=args.bootstrap, seed=args.seed)
        if args.per_sample_csv:
            report.write_per_sample_csv(args.per_sample_csv)
    except (ValueError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict()) if args.json else report.to_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
