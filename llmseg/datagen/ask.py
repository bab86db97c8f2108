"""Stage 3: an LLM writes reasoning questions whose answers are objects listed for the image.

One request per image asks for several questions at once (cheaper than one request per
question: the object list is the bulk of the prompt). The reply is kept verbatim in
``responses.jsonl``; checking it is the ``write`` stage's job, so changing the checks never
costs a request.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmseg.datagen.backends import Backend, GenerationSettings
from llmseg.datagen.records import DESCRIPTIONS_FILE, RESPONSES_FILE, ImageRecord, load_images, read_jsonl
from llmseg.datagen.runner import Job, RequestBudget, Stage, run_stage
from llmseg.datagen.templates import PromptTemplate, load_template

ASK_STAGE = Stage("ask", RESPONSES_FILE, lambda completion: {"model": completion.model, "text": completion.text})


@dataclass(frozen=True)
class AskConfig:
    """The ask stage's prompt (built-in name or file), questions per image and generation settings."""

    prompt: str = "ask_v1"
    questions: int = 3
    generation: GenerationSettings = GenerationSettings(max_tokens=1024, temperature=0.7)

    def __post_init__(self) -> None:
        if self.questions < 1:
            raise ValueError("--questions must be at least 1")


def object_lines(record: ImageRecord) -> str:
    """The object list as the LLM sees it: id, category, XYXY box, share of the image."""
    lines = []
    for obj in record.objects:
        x, y, w, h = obj.box
        share = obj.area / (record.height * record.width)
        lines.append(f"{obj.id}. {obj.category}, box [{x:.0f}, {y:.0f}, {x + w:.0f}, {y + h:.0f}], {share:.1%}")
    return "\n".join(lines)


def ask_messages(
    record: ImageRecord, template: PromptTemplate, questions: int, description: str | None
) -> list[dict[str, Any]]:
    """The chat messages asking for ``questions`` questions about one image."""
    scene = ""
    if description:
        scene = f"\nA scene description by another model (it may be wrong in details):\n{description.strip()}\n"
    return template.messages(
        width=record.width,
        height=record.height,
        objects=object_lines(record),
        description=scene,
        questions=questions,
    )


def run_ask(
    work: Path,
    backend: Backend,
    config: AskConfig = AskConfig(),
    *,
    budget: RequestBudget | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Ask about every selected image not yet answered; append replies to ``responses.jsonl``.

    Scene descriptions from the describe stage, when present for an image, go into its prompt.
    """
    template = load_template(config.prompt)
    descriptions = read_jsonl(work / DESCRIPTIONS_FILE, "image_id")
    jobs = []
    for record in load_images(work):
        description = descriptions.get(record.image_id, {}).get("description")
        jobs.append(Job(record.image_id, ask_messages(record, template, config.questions, description)))
    summary = run_stage(
        ASK_STAGE, work, jobs, backend, config.generation, template.version, budget=budget, dry_run=dry_run
    )
    return {"prompt": template.version, "with_description": sum(j.item in descriptions for j in jobs), **summary}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ask stage (shared by ``ask`` and ``run``)."""
    parser.add_argument("--backend", choices=("api", "transformers"), default="api", help="who writes the questions")
    parser.add_argument("--model-path", default=None, help="transformers backend: causal LM folder or Hub id")
    parser.add_argument("--prompt", default="ask_v1", help="built-in template name or a template file")
    parser.add_argument("--questions", type=int, default=3, help="questions asked per image")
    parser.add_argument("--max-tokens", type=int, default=1024, help="reply length limit in tokens")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0 = greedy)")


def config_from_args(args: argparse.Namespace) -> AskConfig:
    generation = GenerationSettings(max_tokens=args.max_tokens, temperature=args.temperature)
    return AskConfig(prompt=args.prompt, questions=args.questions, generation=generation)
