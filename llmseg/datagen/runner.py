"""Send a stage's requests: cache first, then the backend, concurrently, within a spend cap.

Answers are handed back (``on_done``) on the calling thread as they arrive, so the stage can
append them to its file at once: an interrupted run keeps every answer it paid for.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llmseg.datagen.backends import Backend, Completion, GenerationSettings, RequestFailed
from llmseg.datagen.cache import CACHE_FILE, CompletionCache, request_key
from llmseg.datagen.records import JsonlAppender, read_jsonl

MAX_ERRORS_KEPT = 5


@dataclass
class Job:
    """One request to make: ``item`` names what it is about (an image id).

    ``messages`` are what the cache key hashes; ``render``, when given, builds the messages
    actually sent (e.g. reads an image into a data URL only when the request goes out, where
    ``messages`` carry the image's digest), so thousands of pending jobs stay small in memory.
    """

    item: str
    messages: list[dict[str, Any]]
    render: Callable[[], list[dict[str, Any]]] | None = None

    def outgoing(self) -> list[dict[str, Any]]:
        return self.render() if self.render is not None else self.messages


@dataclass
class RequestBudget:
    """A spend cap in requests, shared by the stages of one run (None = no cap)."""

    limit: int | None = None
    used: int = 0

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError("--max-requests must be 0 or more")

    def take(self) -> bool:
        """Count one request if the cap allows it."""
        if self.limit is not None and self.used >= self.limit:
            return False
        self.used += 1
        return True


@dataclass
class RunStats:
    """What one stage's requests cost: only requests sent this run count towards tokens."""

    jobs: int = 0
    requests: int = 0
    cache_hits: int = 0
    failed: int = 0
    not_sent: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stopped: str | None = None
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DoneCallback = Callable[[Job, str, Completion], None]


def show_prompt(job: Job) -> None:
    """Print a request's messages (images shown as a placeholder) for a dry run."""
    print(f"===== {job.item} =====")
    for message in job.messages:
        content = message["content"]
        if not isinstance(content, str):
            content = "\n".join(part.get("text", "<image>") for part in content)
        print(f"--- {message['role']} ---\n{content}")


def _send(backend: Backend, job: Job, settings: GenerationSettings) -> Completion:
    return backend.complete(job.outgoing(), settings)


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """Rough prompt size for a dry run: about 4 characters a token for English text (images excluded)."""
    text = json.dumps([m["content"] if isinstance(m["content"], str) else "" for m in messages])
    return len(text) // 4


def run_jobs(
    jobs: Iterable[Job],
    backend: Backend,
    settings: GenerationSettings,
    cache: CompletionCache,
    on_done: DoneCallback,
    *,
    budget: RequestBudget,
    dry_run: bool = False,
    desc: str = "requests",
) -> RunStats:
    """Answer every job from the cache or the backend; return what it cost.

    A job whose request fails after retries is counted in ``failed`` and left unanswered (a
    re-run tries again). Once the budget is spent, uncached jobs are counted in ``not_sent`` and
    ``stopped`` is ``"spend-cap"``. In a dry run nothing is sent: prompts that would be sent are
    printed and counted in ``requests``, with ``prompt_tokens`` a rough estimate.
    """
    jobs = list(jobs)
    stats = RunStats(jobs=len(jobs))
    pending: dict[Future[Completion], tuple[Job, str]] = {}

    def collect(block: bool) -> None:
        done, _ = wait(pending, return_when=FIRST_COMPLETED, timeout=None if block else 0)
        for future in done:
            job, key = pending.pop(future)
            try:
                completion = future.result()
            except RequestFailed as error:
                stats.failed += 1
                if len(stats.errors) < MAX_ERRORS_KEPT:
                    stats.errors.append(f"{job.item}: {error}")
                bar.update()
                continue
            cache.put(key, completion)
            stats.prompt_tokens += completion.prompt_tokens
            stats.completion_tokens += completion.completion_tokens
            on_done(job, key, completion)
            bar.update()

    pool = ThreadPoolExecutor(max_workers=backend.max_concurrency)
    with tqdm(total=len(jobs), desc=desc, unit="image", disable=None) as bar:
        try:
            for job in jobs:
                key = request_key(backend.identity, settings.as_dict(), job.messages)
                cached = cache.get(key)
                if cached is not None:
                    stats.cache_hits += 1
                    on_done(job, key, cached)
                    bar.update()
                    continue
                if not budget.take():
                    stats.not_sent += 1
                    stats.stopped = "spend-cap"
                    bar.update()
                    continue
                stats.requests += 1
                if dry_run:
                    show_prompt(job)
                    stats.prompt_tokens += estimate_tokens(job.messages)
                    bar.update()
                    continue
                while len(pending) >= backend.max_concurrency:
                    collect(block=True)
                pending[pool.submit(_send, backend, job, settings)] = (job, key)
                collect(block=False)
            while pending:
                collect(block=True)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            _keep_paid_answers(pending, cache)
    return stats


def _keep_paid_answers(pending: dict[Future[Completion], tuple[Job, str]], cache: CompletionCache) -> None:
    """Cache answers that arrived while the run was failing, so a re-run does not pay for them again."""
    for future, (_, key) in pending.items():
        if not future.cancelled() and future.exception() is None:
            cache.put(key, future.result())


@dataclass(frozen=True)
class Stage:
    """A stage that asks a model: its name (progress bar, summary), its JSON Lines output in the work folder,
    and the fields of an answer it keeps after ``image_id``, ``request_key`` and ``prompt``."""

    name: str
    output_file: str
    answer_fields: Callable[[Completion], dict[str, Any]]


def run_stage(
    stage: Stage,
    work: Path,
    jobs: list[Job],
    backend: Backend,
    settings: GenerationSettings,
    prompt_version: str,
    *,
    budget: RequestBudget | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Answer the jobs not yet answered in the stage's output (JSON Lines keyed by ``image_id``).

    The one request block of every stage that asks a model: the work folder's completion cache,
    the spend cap, and one record per answer. An item counts as answered when its stored
    ``request_key`` equals the current one, so a changed prompt, model or setting asks again while
    an unchanged re-run touches nothing. Each answer is appended as soon as it arrives; a dry run
    writes nothing. Returns the summary, ``prompt`` first.
    """
    output = work / stage.output_file
    retries_before = backend.retries
    stored = read_jsonl(output, "image_id")
    todo = []
    for job in jobs:
        key = request_key(backend.identity, settings.as_dict(), job.messages)
        if stored.get(job.item, {}).get("request_key") != key:
            todo.append(job)
    cache = CompletionCache(work / CACHE_FILE)
    try:
        with JsonlAppender(output) as appender:

            def on_done(job: Job, key: str, completion: Completion) -> None:
                if not dry_run:
                    record = {"image_id": job.item, "request_key": key, "prompt": prompt_version}
                    appender.append({**record, **stage.answer_fields(completion)})

            budget = budget or RequestBudget()
            stats = run_jobs(todo, backend, settings, cache, on_done, budget=budget, dry_run=dry_run, desc=stage.name)
    finally:
        cache.close()
    summary = {"prompt": prompt_version, "images": len(jobs), "already_answered": len(jobs) - len(todo)}
    summary.update(stats.as_dict())
    summary["retries"] = backend.retries - retries_before
    summary["model"] = backend.identity
    summary["dry_run"] = dry_run
    return summary
