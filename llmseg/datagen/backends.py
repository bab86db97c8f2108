"""Where completions come from: an OpenAI-compatible HTTP endpoint, a local causal LM, a local VLM.

Every backend takes OpenAI-style chat messages and returns a ``Completion``; the stages never know
which one they talk to. ``identity`` names the model for the cache key; ``max_concurrency`` says
how many requests may run at once (local models run one at a time).
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import io
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

ENV_BASE, ENV_KEY, ENV_MODEL = "LLMSEG_API_BASE", "LLMSEG_API_KEY", "LLMSEG_API_MODEL"
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings of one request; part of the cache key."""

    max_tokens: int = 1024
    temperature: float = 0.7

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError("temperature must be between 0 and 2")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Completion:
    """A model's reply and what it cost (tokens as the server counted them, 0 when unknown)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""


class RequestFailed(Exception):
    """One request could not be completed (after retries); the run goes on without it."""


class Backend(Protocol):
    identity: str
    max_concurrency: int
    retries: int  # transient failures retried so far (0 for local models)

    def complete(self, messages: list[dict[str, Any]], settings: GenerationSettings) -> Completion: ...


class RateLimiter:
    """Spaces request starts at least ``60 / requests_per_minute`` seconds apart, across threads."""

    def __init__(self, requests_per_minute: float | None, sleep: Callable[[float], None] = time.sleep) -> None:
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ValueError("the rate limit (--rpm) must be a positive number of requests per minute")
        self._interval = 0.0 if requests_per_minute is None else 60.0 / requests_per_minute
        self._next = 0.0
        self._lock = threading.Lock()
        self._sleep = sleep

    def acquire(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            self._sleep(start - now)


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header (seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend:
    """An OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, llama.cpp, TGI, ...).

    ``base_url`` is the API root including its version (``https://api.openai.com/v1``,
    ``http://localhost:8000/v1``). Transient failures (429, 5xx, timeouts, dropped connections)
    are retried after the delay a Retry-After header asks for, else with exponential back-off and
    jitter; no wait exceeds ``max_backoff``. Thread-safe: one shared ``httpx.Client``, counters
    behind a lock.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        concurrency: int = 4,
        requests_per_minute: float | None = None,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 120.0,
        timeout: float = 120.0,
        json_mode: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the API base URL {base_url!r} must start with http:// or https://")
        if not model:
            raise ValueError(f"no API model named: set {ENV_MODEL} or pass --api-model")
        if concurrency < 1 or max_retries < 0:
            raise ValueError("--concurrency must be at least 1 and --max-retries at least 0")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.identity = f"openai:{base_url.rstrip('/')}:{model}" + (":json" if json_mode else "")
        self.max_concurrency = concurrency
        self.max_retries = max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.json_mode = json_mode
        self.attempts = 0
        self.retries = 0
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout)
        self._limiter = RateLimiter(requests_per_minute, sleep)
        self._sleep = sleep
        self._lock = threading.Lock()

    def complete(self, messages: list[dict[str, Any]], settings: GenerationSettings) -> Completion:
        body: dict[str, Any] = {"model": self.model, "messages": messages, **settings.as_dict()}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        for attempt in range(self.max_retries + 1):
            self._limiter.acquire()
            with self._lock:
                self.attempts += 1
                if attempt:
                    self.retries += 1
            wait: float | None = None
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as error:  # timeouts, refused or dropped connections
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    return self._parse(response)
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code in (401, 403):
                    raise ValueError(f"the API refused the request ({problem}): set {ENV_KEY} to a valid key")
                if response.status_code == 404:
                    raise ValueError(
                        f"the API answered {problem}: check {ENV_BASE} (the root ending in /v1) and the model name"
                    )
                if response.status_code not in RETRY_STATUSES:
                    raise RequestFailed(problem)
                wait = retry_after_seconds(response.headers.get("retry-after"))
            if attempt == self.max_retries:
                raise RequestFailed(f"gave up after {attempt + 1} attempts; last: {problem}")
            if wait is None:
                wait = self.backoff * 2**attempt * random.uniform(0.5, 1.0)
            self._sleep(min(wait, self.max_backoff))
        raise AssertionError("unreachable")

    def _parse(self, response: httpx.Response) -> Completion:
        try:
            data = response.json()
            message = data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise RequestFailed(f"the API answered 200 without a chat completion: {response.text[:200]}") from None
        usage = data.get("usage") or {}
        return Completion(
            text=message.get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            model=str(data.get("model") or self.model),
        )


def _text_only(messages: list[dict[str, Any]], backend: str) -> list[dict[str, str]]:
    for message in messages:
        if not isinstance(message["content"], str):
            raise ValueError(f"the {backend} backend reads text only: describe images with the api or vlm backend")
    return messages


def model_location(path: str) -> str:
    """A local folder's absolute path, or a Hub id as given (part of the cache key).

    Raises ``ValueError`` for a path that neither exists nor looks like ``owner/name``.
    """
    local = Path(path)
    if local.exists():
        return str(local.resolve())
    if path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise ValueError(f"no model at {path!r}: give a folder saved with save_pretrained or a Hub id (owner/name)")
    return path


class TransformersBackend:
    """A local causal LM (``AutoModelForCausalLM`` + ``AutoTokenizer`` from a folder or Hub id).

    Uses the tokenizer's chat template when it has one, else a plain "System/User/Assistant"
    transcript. Greedy decoding at temperature 0, sampling otherwise. The weights load on the
    first request, so a re-run with every answer stored never loads them.
    """

    max_concurrency = 1
    retries = 0

    def __init__(self, path: str, *, device: str = "cpu", dtype: str = "auto") -> None:
        self.path, self.device, self.dtype = path, device, dtype
        self.identity = f"transformers:{model_location(path)}"
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.path)
                model = AutoModelForCausalLM.from_pretrained(self.path, dtype=self.dtype).to(self.device).eval()
            except OSError as error:
                raise ValueError(f"cannot load a causal LM from {self.path!r}: {error}") from None
            self._loaded = tokenizer, model
        return self._loaded

    @staticmethod
    def _prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> Any:
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return tokenizer(text, return_tensors="pt", add_special_tokens=False)
        transcript = "".join(f"{m['role'].capitalize()}:\n{m['content']}\n\n" for m in messages) + "Assistant:\n"
        return tokenizer(transcript, return_tensors="pt")

    def complete(self, messages: list[dict[str, Any]], settings: GenerationSettings) -> Completion:
        import torch

        tokenizer, model = self._load()
        inputs = self._prompt_ids(tokenizer, _text_only(messages, "transformers")).to(self.device)
        sampling: dict[str, Any] = {"do_sample": False}
        if settings.temperature > 0:
            sampling = {"do_sample": True, "temperature": settings.temperature}
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=settings.max_tokens, pad_token_id=pad_id, **sampling)
        prompt_length = inputs["input_ids"].shape[1]
        new_tokens = output[0, prompt_length:]
        return Completion(
            text=tokenizer.decode(new_tokens, skip_special_tokens=True),
            prompt_tokens=int(prompt_length),
            completion_tokens=int(new_tokens.shape[0]),
            model=self.identity,
        )


def image_data_url(path: str | Path, max_side: int) -> str:
    """An image file as a JPEG data URL, shrunk so its long side is at most ``max_side``."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the OpenAI-compatible backend (the key only ever comes from the environment)."""
    group = parser.add_argument_group("API backend (OpenAI-compatible; key from $" + ENV_KEY + ")")
    group.add_argument("--api-base", default=None, help=f"API root ending in /v1 (default: ${ENV_BASE})")
    group.add_argument("--api-model", default=None, help=f"model name (default: ${ENV_MODEL})")
    group.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    group.add_argument("--rpm", type=float, default=None, help="at most this many requests per minute")
    group.add_argument("--max-retries", type=int, default=5, help="retries of a 429/5xx/timeout")
    group.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request")
    group.add_argument("--json-mode", action="store_true", help='send response_format={"type": "json_object"}')


def api_backend(args: argparse.Namespace, model: str | None = None) -> OpenAIBackend:
    """Build the HTTP backend from CLI options, falling back on the LLMSEG_API_* variables."""
    base = args.api_base or os.environ.get(ENV_BASE)
    if not base:
        raise ValueError(f"no API base URL: set {ENV_BASE} (e.g. https://api.openai.com/v1) or pass --api-base")
    return OpenAIBackend(
        base,
        model or args.api_model or os.environ.get(ENV_MODEL, ""),
        os.environ.get(ENV_KEY),
        concurrency=args.concurrency,
        requests_per_minute=args.rpm,
        max_retries=args.max_retries,
        timeout=args.timeout,
        json_mode=args.json_mode,
    )
