"""``python -m llmseg.datagen <select|describe|ask|write|run>``: grow an LLM-Seg40K-style dataset.

All stages share one ``--work`` folder; each is resumable (re-run the same command after an
interruption) and idempotent (a finished stage re-run sends no request and changes nothing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from llmseg.datagen import ask, describe, select, write
from llmseg.datagen.backends import Backend, TransformersBackend, add_api_arguments, api_backend
from llmseg.datagen.records import REJECTED_FILE, SUMMARY_FILE, update_summary
from llmseg.datagen.runner import RequestBudget


def _common(parser: argparse.ArgumentParser, *, requests: bool) -> None:
    parser.add_argument("--work", type=Path, required=True, help="work folder shared by the stages")
    parser.add_argument("--device", default="cpu", help="torch device for SAM and local models")
    if requests:
        parser.add_argument("--max-requests", type=int, default=None, help="spend cap: send at most this many requests")
        parser.add_argument("--dry-run", action="store_true", help="print the prompts that would be sent; send nothing")
        add_api_arguments(parser)


def _ask_backend(args: argparse.Namespace) -> Backend:
    if args.backend == "transformers":
        if not args.model_path:
            raise ValueError("the transformers backend needs --model-path (a causal LM folder or Hub id)")
        return TransformersBackend(args.model_path, device=args.device)
    return api_backend(args)


def _describe_backend(args: argparse.Namespace) -> Backend:
    if args.describe_backend == "vlm":
        if not args.vlm:
            raise ValueError("the vlm describe backend needs --vlm (a LLaVA checkpoint folder or Hub id)")
        return describe.VLMBackend(args.vlm, device=args.device)
    return api_backend(args, model=args.describe_model)


def format_summary(stage: str, summary: dict[str, Any]) -> str:
    """A stage summary as readable lines (nested dicts on one line)."""
    lines = [f"== {stage} =="]
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        elif isinstance(value, list):
            value = "; ".join(map(str, value)) or "none"
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def _report(work: Path, stage: str, summary: dict[str, Any]) -> dict[str, Any]:
    update_summary(work, stage, summary)
    print(format_summary(stage, summary))
    if stage == "write" and summary["out"] is None:
        print(f"nothing written: no question passed the checks (see {work / REJECTED_FILE})")
    if summary.get("stopped") == "spend-cap":
        print(
            f"{stage} stopped at the spend cap: {summary['not_sent']} request(s) not sent; "
            "run the same command again (with a higher --max-requests) to continue, answers so far are kept"
        )
    return summary


def _select(args: argparse.Namespace) -> None:
    _report(args.work, "select", select.select_from_args(args))


def _describe(args: argparse.Namespace, budget: RequestBudget | None = None) -> dict[str, Any]:
    budget = budget or RequestBudget(args.max_requests)
    summary = describe.run_describe(
        args.work, _describe_backend(args), describe.config_from_args(args), budget=budget, dry_run=args.dry_run
    )
    return _report(args.work, "describe", summary)


def _ask(args: argparse.Namespace, budget: RequestBudget | None = None) -> dict[str, Any]:
    budget = budget or RequestBudget(args.max_requests)
    config = ask.config_from_args(args)
    summary = ask.run_ask(args.work, _ask_backend(args), config, budget=budget, dry_run=args.dry_run)
    return _report(args.work, "ask", summary)


def _write(args: argparse.Namespace) -> None:
    _report(args.work, "write", write.run_write(args.work, args.out, write.config_from_args(args)))


def _run(args: argparse.Namespace) -> None:
    budget = RequestBudget(args.max_requests)
    _select(args)
    if args.describe_backend != "none" and _describe(args, budget).get("stopped"):
        return
    if _ask(args, budget).get("stopped") or args.dry_run:
        return
    _write(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llmseg.datagen", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    stages = {
        "select": ("pick images and build object masks (stage 1)", _select),
        "describe": ("describe each image with a VLM (stage 2, optional)", _describe),
        "ask": ("have an LLM write reasoning questions (stage 3)", _ask),
        "write": ("check the answers and write the dataset (stage 4)", _write),
        "run": ("all stages in order", _run),
    }
    for name, (help_text, handler) in stages.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _common(sub, requests=name in ("describe", "ask", "run"))
        if name in ("select", "run"):
            select.add_arguments(sub)
        if name in ("describe", "run"):
            describe.add_arguments(sub, optional=name == "run")
        if name in ("ask", "run"):
            ask.add_arguments(sub)
        if name in ("write", "run"):
            write.add_arguments(sub)
        sub.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: answers so far are kept in {args.work}; run the same command to continue", file=sys.stderr)
        return 130
    print(f"summary written to {args.work / SUMMARY_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
