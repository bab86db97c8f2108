"""``python -m llmseg predict``: masks for a whole split, in the evaluation core's predictions format.

Resumable: ids already in the output file are skipped, and a line cut short by an interrupted
run is dropped. Shardable: under ``accelerate launch -m llmseg predict ...`` process i of n takes
the i-th contiguous block of the split (so questions about one image stay together and share
its cached proposals and features), appends to ``OUT.part<i>`` on its own device, and the main
process merges the parts into ``OUT`` when all are done.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from eval import load_split, read_predictions, rle, write_predictions


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="write predictions for a dataset split",
        description="Segment every sample of a split and write a predictions file (JSON Lines, one RLE mask per id).",
    )
    parser.add_argument("--preset", required=True, help="preset name (tiny, shapes, ...), checkpoint folder or Hub id")
    parser.add_argument("--data", required=True, help="dataset folder or Hub dataset id")
    parser.add_argument("--split", required=True, help="split name, e.g. validation")
    parser.add_argument("--out", required=True, type=Path, help="predictions file to write or resume (.jsonl)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples of the split")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's); 1 beside other jobs on a shared CPU",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be a positive number of samples")
    if args.torch_threads is not None and args.torch_threads < 1:
        raise ValueError("--torch-threads must be at least 1")
    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a file name such as predictions.jsonl")
    from accelerate import PartialState  # one process, or one per GPU under `accelerate launch`

    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    state = PartialState()
    predict_split(
        args.preset,
        args.data,
        args.split,
        args.out,
        limit=args.limit,
        process_index=state.process_index,
        num_processes=state.num_processes,
        device=str(state.device),
        show_progress=state.is_local_main_process,
    )
    state.wait_for_everyone()
    if state.num_processes > 1 and state.is_main_process:
        merge_parts(args.out, state.num_processes)
    return 0


def predict_split(
    model_name: str,
    data: str,
    split: str,
    out: Path,
    *,
    limit: int | None = None,
    process_index: int = 0,
    num_processes: int = 1,
    device: str = "cpu",
    show_progress: bool = True,
) -> Path:
    """Append this process's predictions to its file (``out``, or ``out.part<i>`` when sharded); return it."""
    from llmseg.model.llmseg import LLMSeg  # torch and the model load only when predicting
    from llmseg.pipeline import Segmenter

    dataset = load_split(data, split, require_ground_truth=False)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    dataset = dataset.select_columns(["id", "image", "query", "tags"])
    target = out if num_processes == 1 else part_path(out, process_index)
    done = completed_ids(target) | (completed_ids(out) if target != out else set())
    ids = dataset["id"]
    first, last = len(ids) * process_index // num_processes, len(ids) * (process_index + 1) // num_processes
    todo = [index for index in range(first, last) if ids[index] not in done]
    kept = (last - first) - len(todo)
    if kept and show_progress:  # a file from another model would otherwise be resumed silently
        print(
            f"resuming {target}: {kept} of {last - first} predictions already there are kept "
            "(delete the file to predict them again)",
            file=sys.stderr,
        )
    if not todo:
        return target

    segmenter = Segmenter(LLMSeg.from_pretrained(model_name, device=device), cache_size=4)
    with target.open("a", encoding="utf-8") as file:
        for index in tqdm(todo, desc=f"predict {split}", unit="sample", disable=not show_progress):
            row = dataset[index]
            result = segmenter.segment(row["image"], row["query"], sentence=_sentence_tag(row["tags"]))
            file.write(json.dumps({"id": row["id"], "mask": rle.encode(result.mask)}) + "\n")
            file.flush()
    return target


def part_path(out: Path, process_index: int) -> Path:
    return out.with_name(f"{out.name}.part{process_index}")


def completed_ids(path: Path) -> set[str]:
    """Ids with a complete line in ``path``; a cut-off last line is removed so appending stays valid."""
    return {sample_id for sample_id, _ in _complete_entries(path)}


def merge_parts(out: Path, num_processes: int) -> None:
    """Fold ``out.part0..n-1`` (and what ``out`` already held) into ``out``, then delete the parts."""
    parts = [part_path(out, index) for index in range(num_processes)]
    merged: dict[str, Any] = {}
    for path in (out, *parts):
        for sample_id, mask in _complete_entries(path):
            merged.setdefault(sample_id, mask)
    write_predictions(out, merged.items())
    read_predictions(out)  # the merged file must be one the evaluation core accepts
    for path in parts:
        path.unlink(missing_ok=True)


def _complete_entries(path: Path) -> Iterator[tuple[str, Any]]:
    if not path.is_file():
        return
    content = path.read_bytes()
    complete = content[: content.rfind(b"\n") + 1]
    if len(complete) != len(content):
        with path.open("r+b") as file:  # an interrupted write: drop the partial line
            file.truncate(len(complete))
    for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            yield entry["id"], entry["mask"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path} line {number} is not a prediction; delete the file to start over") from None


def _sentence_tag(tags: list[str] | None) -> bool | None:
    """ReasonSeg's long/short flag from the sample's tags; None lets the model guess."""
    tags = tags or []
    if "long" in tags:
        return True
    if "short" in tags:
        return False
    return None
