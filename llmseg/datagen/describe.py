"""Stage 2 (optional): a vision-language model writes a scene description per image.

The description gives the question writer context the object list lacks (what people are
doing, the setting); the paper used LLaVA for this. Backends: the OpenAI-compatible API
(a vision model, images sent as data URLs) or a local LLaVA checkpoint through the model's own
loading code.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmseg.datagen.backends import Completion, GenerationSettings, image_data_url, model_location
from llmseg.datagen.records import DESCRIPTIONS_FILE, load_images
from llmseg.datagen.runner import Job, RequestBudget, Stage, run_stage
from llmseg.datagen.templates import PromptTemplate, load_template

DESCRIBE_STAGE = Stage("describe", DESCRIPTIONS_FILE, lambda completion: {"description": completion.text})


@dataclass(frozen=True)
class DescribeConfig:
    """The describe stage's prompt, image size sent, and generation settings."""

    prompt: str = "describe_v1"
    max_side: int = 768
    generation: GenerationSettings = GenerationSettings(max_tokens=300, temperature=0.2)

    def __post_init__(self) -> None:
        if self.max_side < 32:
            raise ValueError("--describe-max-side must be at least 32 pixels")


class VLMBackend:
    """A local LLaVA checkpoint loaded by ``llmseg.model.vlm`` (the model's own loading code).

    The weights load on the first request, so a re-run with every image described never loads them.
    """

    max_concurrency = 1
    retries = 0

    def __init__(self, path: str, device: str = "cpu") -> None:
        self.path, self.device = path, device
        self.identity = f"vlm:{model_location(path)}"
        self._vlm: Any = None

    def _load(self) -> Any:
        if self._vlm is None:
            from llmseg.model.config import VLMConfig
            from llmseg.model.vlm import VLM

            self._vlm = VLM.from_config(VLMConfig(llava=self.path), device=self.device)
        return self._vlm

    def complete(self, messages: list[dict[str, Any]], settings: GenerationSettings) -> Completion:
        from PIL import Image

        parts = messages[-1]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        text = "\n".join(p["text"] for p in parts if p["type"] == "text")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
        answer = self._load().generate_answer(image, text, max_new_tokens=settings.max_tokens)
        return Completion(text=answer, model=self.identity)


def _job(image_id: str, path: str, template: PromptTemplate, max_side: int) -> Job:
    """A describe request whose cache key holds the image file's digest, not its pixels."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return Job(
        image_id,
        template.messages(image_url=f"sha256:{digest}@{max_side}"),
        render=lambda: template.messages(image_url=image_data_url(path, max_side)),
    )


def run_describe(
    work: Path,
    backend: Any,
    config: DescribeConfig = DescribeConfig(),
    *,
    budget: RequestBudget | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Describe every selected image not yet described; append to ``descriptions.jsonl``."""
    template = load_template(config.prompt)
    jobs = [_job(record.image_id, record.path, template, config.max_side) for record in load_images(work)]
    return run_stage(
        DESCRIBE_STAGE, work, jobs, backend, config.generation, template.version, budget=budget, dry_run=dry_run
    )


def add_arguments(parser: argparse.ArgumentParser, *, optional: bool) -> None:
    """Options of the describe stage; in ``run`` the stage is skipped unless a backend is named."""
    choices = ("none", "api", "vlm") if optional else ("api", "vlm")
    parser.add_argument(
        "--describe-backend", choices=choices, default=choices[0], help="who describes the images (vlm = local LLaVA)"
    )
    parser.add_argument("--vlm", default=None, help="vlm backend: LLaVA checkpoint folder or Hub id")
    parser.add_argument("--describe-model", default=None, help="api backend: vision model name (default: --api-model)")
    parser.add_argument("--describe-prompt", default="describe_v1", help="built-in template name or a template file")
    parser.add_argument("--describe-max-side", type=int, default=768, help="long side of the image sent, in pixels")
    parser.add_argument("--describe-max-tokens", type=int, default=300, help="description length limit in tokens")


def config_from_args(args: argparse.Namespace) -> DescribeConfig:
    # The temperature has no flag: descriptions keep the default's.
    generation = replace(DescribeConfig().generation, max_tokens=args.describe_max_tokens)
    return DescribeConfig(prompt=args.describe_prompt, max_side=args.describe_max_side, generation=generation)
