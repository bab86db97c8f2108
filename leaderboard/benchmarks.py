"""The benchmarks one leaderboard scores: a held-out split each, listed in a JSON or YAML file.

A benchmarks file is an object with one key, ``benchmarks``: a list of entries, each with a
``name`` (lowercase letters, digits, ``.``, ``_``, ``-``), ``data`` (a dataset folder or a Hub
dataset id, as ``--data`` takes it), and optionally ``split`` (default ``test``),
``description``, ``baselines`` (a folder of ``<name>.jsonl`` baseline predictions; default
``<data>/baselines`` for a local folder) and ``private_per_sample`` (default false: set it true
for a hidden split such as LLM-Seg40K's test split, whose per-sample scores would leak the
ground truth). The first entry is the default benchmark. Relative paths are relative to the
working directory, as ``--data`` is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
DEFAULT_BENCHMARK = "shapes"
DEFAULT_BENCHMARKS_FILE = Path(__file__).resolve().parent / "benchmarks.json"
_KEYS = ("name", "data", "split", "description", "baselines", "private_per_sample")
_TEXT_KEYS = ("data", "split", "description", "baselines")


@dataclass(frozen=True)
class Benchmark:
    """One held-out split submissions are scored against, with its own table, baselines and limits.

    Attributes:
        name: the id used by ``submit --benchmark``, the API and the store.
        data: a local dataset folder or a Hub dataset id holding the ground truth.
        split: the split of ``data`` scored against.
        description: one line shown above the benchmark's table.
        baselines_dir: folder of baseline prediction files; None means ``<data>/baselines`` when
            ``data`` is a local folder, else no baselines.
        private_per_sample: whether per-sample results stay hidden even from their submitter.
    """

    name: str
    data: str
    split: str = "test"
    description: str = ""
    baselines_dir: Path | None = None
    private_per_sample: bool = False

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(
                f"the benchmark name {self.name!r} is not a short lowercase id: "
                "use letters, digits, '.', '_' or '-', e.g. reasonseg-val"
            )
        if not self.data.strip():
            raise ValueError(f"benchmark {self.name!r} has an empty data: give a dataset folder or a Hub dataset id")
        if not self.split.strip():
            raise ValueError(f"benchmark {self.name!r} has an empty split: name a split of its data, e.g. test")
        if self.baselines_dir is not None:
            object.__setattr__(self, "baselines_dir", Path(self.baselines_dir))

    def resolved_baselines_dir(self) -> Path | None:
        """The baseline folder to score, or None when there is none."""
        if self.baselines_dir is not None:
            return self.baselines_dir
        local = Path(self.data)
        return local / "baselines" if local.is_dir() else None


def load_benchmarks(path: str | Path) -> tuple[Benchmark, ...]:
    """Read and validate a benchmarks file (``.json``, ``.yaml`` or ``.yml``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no benchmarks file at {str(path)!r}: give the path of a .json or .yaml benchmarks file")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ValueError(f"the benchmarks file {str(path)!r} is neither .json nor .yaml: rename it accordingly")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"the benchmarks file {str(path)!r} is not UTF-8 text: save it as UTF-8") from None
    if suffix == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"the benchmarks file {str(path)!r} is not valid JSON ({error}): fix its syntax") from None
    else:
        import yaml  # only a YAML benchmarks file needs it

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            message = " ".join(str(error).split())
            raise ValueError(f"the benchmarks file {str(path)!r} is not valid YAML ({message}): fix it") from None
    try:
        return parse_benchmarks(value)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def parse_benchmarks(value: Any) -> tuple[Benchmark, ...]:
    """Benchmarks from a parsed file: ``{"benchmarks": [{"name": ..., "data": ...}, ...]}``."""
    if not isinstance(value, dict) or not isinstance(value.get("benchmarks"), list):
        raise ValueError('the file must be an object whose "benchmarks" key lists the benchmarks')
    unknown_top = sorted(set(value) - {"benchmarks"})
    if unknown_top:
        raise ValueError(f'unknown top-level key(s) {", ".join(unknown_top)}: only "benchmarks" is read')
    entries = value["benchmarks"]
    if not entries:
        raise ValueError('the "benchmarks" list is empty: list at least one benchmark')
    benchmarks = tuple(_benchmark(entry, position) for position, entry in enumerate(entries, start=1))
    seen: set[str] = set()
    for benchmark in benchmarks:
        if benchmark.name in seen:
            raise ValueError(f"the benchmark name {benchmark.name!r} appears twice: give each benchmark its own name")
        seen.add(benchmark.name)
    return benchmarks


def _benchmark(entry: Any, position: int) -> Benchmark:
    where = f"benchmark {position}"
    if not isinstance(entry, dict):
        raise ValueError(f'{where} is not an object: give each benchmark as {{"name": ..., "data": ...}}')
    if isinstance(entry.get("name"), str):
        where += f" ({entry['name']!r})"
    unknown = sorted(set(entry) - set(_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {', '.join(map(str, unknown))}: the keys are {', '.join(_KEYS)}")
    for key in ("name", "data"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise ValueError(f'{where} has no "{key}": give it as a non-empty string')
    for key in _TEXT_KEYS:
        if key in entry and entry[key] is not None and not isinstance(entry[key], str):
            raise ValueError(f'{where} has a "{key}" that is not a string: quote it')
    private = entry.get("private_per_sample", False)
    if not isinstance(private, bool):
        raise ValueError(f'{where} has "private_per_sample": {private!r}: use true or false')
    try:
        return Benchmark(
            name=entry["name"].strip(),
            data=entry["data"].strip(),
            split=(entry.get("split") or "test").strip(),
            description=(entry.get("description") or "").strip(),
            baselines_dir=Path(entry["baselines"]) if entry.get("baselines") else None,
            private_per_sample=private,
        )
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
