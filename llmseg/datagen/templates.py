"""Versioned prompt templates: text files with a ``[system]`` and a ``[user]`` section.

Placeholders use ``string.Template`` syntax (``${name}``) so JSON examples in a prompt need no
escaping. A template's version is its file name without ``.txt``; it is recorded with every
response, and the prompt text is part of the cache key, so editing a template re-asks.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPTS_DIR = Path(__file__).parent / "prompts"
_SECTION = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)


@dataclass(frozen=True)
class PromptTemplate:
    """A chat prompt: optional system text and a user text, both with ``${...}`` fields."""

    version: str
    system: str
    user: str

    def messages(self, image_url: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """OpenAI-style chat messages; ``image_url`` (a data URL) goes before the user text."""
        try:
            user = string.Template(self.user).substitute(fields)
            system = string.Template(self.system).substitute(fields)
        except KeyError as error:
            known = ", ".join(fields)
            raise ValueError(f"prompt {self.version} uses the unknown field {error}; known fields: {known}") from None
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": system})
        if image_url is None:
            messages.append({"role": "user", "content": user})
        else:
            content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": user}]
            messages.append({"role": "user", "content": content})
        return messages


def load_template(name_or_path: str) -> PromptTemplate:
    """Load a built-in template by name (``ask_v1``) or any template file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPTS_DIR / f"{name_or_path}.txt"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.txt")))
        raise ValueError(f"no prompt template {name_or_path!r}: give a file path or one of {known}")
    text = path.read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise ValueError(f"{path} must start with a [system] or [user] line followed by its text")
    sections = {name: body.strip("\n") for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if "user" not in sections:
        raise ValueError(f"{path} has no [user] section")
    return PromptTemplate(version=path.stem, system=sections.get("system", ""), user=sections["user"])
