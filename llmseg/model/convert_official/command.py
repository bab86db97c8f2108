"""``convert-official``: the converter's sub-command of ``python -m llmseg``."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmseg.model.convert_official.convert import DEFAULT_MAX_SHARD_SIZE, DTYPES, REPORT_FILE, convert_official


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``convert-official`` to ``python -m llmseg``."""
    parser = subparsers.add_parser(
        "convert-official",
        help="convert the authors' released DeepSpeed checkpoint into a model folder",
        description=(
            "Convert the LLM-Seg release (JCdesu/LLM-Seg-deepspeed and siblings) into a folder that "
            "LLMSeg.from_pretrained loads. The model-states file is read memory-mapped and streamed, so it needs "
            "far less RAM than its 31 GB. If the file pickles more than tensors it is unpickled in full, which runs "
            "code from it: convert only files from the authors' release (a trusted source)."
        ),
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="Hub id, repository folder, ckpt_model or global_step folder, or the .pt file",
    )
    parser.add_argument(
        "--step",
        type=int,
        default=None,
        help="which global_step<N> to convert (default: the only one, else the latest)",
    )
    parser.add_argument(
        "--base-tokenizer",
        required=True,
        help="folder or Hub id of the LLaMA-7B tokenizer the release was trained with",
    )
    parser.add_argument("--sam-checkpoint", required=True, help="path of sam_vit_h_4b8939.pth (the proposals' SAM)")
    parser.add_argument("--out", required=True, help="new folder for the converted model")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="weights' precision on disk")
    parser.add_argument(
        "--max-shard-size",
        default=DEFAULT_MAX_SHARD_SIZE,
        help="largest safetensors shard of llava/ and dinov2/ (default %(default)s)",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    report = convert_official(
        args.checkpoint,
        base_tokenizer=args.base_tokenizer,
        sam_checkpoint=args.sam_checkpoint,
        out=args.out,
        step=args.step,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
    )
    counts = report["counts"]
    print(
        f"converted {counts['source_keys']} keys ({counts['mapped']} mapped, {counts['dropped']} dropped) "
        f"into {Path(args.out).resolve()}; details in {REPORT_FILE}"
    )
    return 0
