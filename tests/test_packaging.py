"""pyproject.toml against the lock files, and the project installed where no checkout is in sight."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from test_cli import COMMANDS

from eval import read_predictions

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# What a wheel is built from: the packages and the files pyproject.toml names.
SOURCES = ("pyproject.toml", "README.md", "llmseg", "eval", "leaderboard", "llmseg_app")


def locked_pins(path: Path) -> dict[str, Version]:
    """``name==version`` per line of a lock file (comments and ``-r`` includes skipped); anything else fails."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-r "):
            continue
        requirement = Requirement(line)
        clauses = list(requirement.specifier)
        assert len(clauses) == 1 and clauses[0].operator == "==", f"{path.name}: {line!r} is not an exact pin"
        pins[canonicalize_name(requirement.name)] = Version(clauses[0].version)
    return pins


def declared(requirements: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(requirement.name): requirement for requirement in map(Requirement, requirements)}


def assert_agree(ranges: dict[str, Requirement], pins: dict[str, Version]) -> None:
    assert set(ranges) == set(pins), f"pyproject only: {set(ranges) - set(pins)}, lock only: {set(pins) - set(ranges)}"
    refused = {
        name: f"{pin} not in {ranges[name].specifier}"
        for name, pin in pins.items()
        if pin not in ranges[name].specifier
    }
    assert not refused, refused


def test_runtime_dependencies_are_the_locked_packages_and_admit_their_pins() -> None:
    assert_agree(declared(PROJECT["dependencies"]), locked_pins(REPO / "requirements.txt"))


def test_test_extra_is_the_test_lock_and_admits_its_pins() -> None:
    assert_agree(declared(PROJECT["optional-dependencies"]["test"]), locked_pins(REPO / "requirements-test.txt"))


def _run(command: list[str | Path], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(map(str, command)), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


INSPECT = """
import json, llmseg
from leaderboard.benchmarks import DEFAULT_BENCHMARKS_FILE
from llmseg.datagen.templates import PROMPTS_DIR, load_template
from llmseg.model.presets import PRESETS
weights = PRESETS["shapes"].weights
print(json.dumps({
    "llmseg": llmseg.__file__,
    "weights": str(weights),
    "weight_files": sorted(p.name for p in weights.glob("*.safetensors")),
    "prompt": load_template("ask_v1").version,
    "prompts_dir": str(PROMPTS_DIR),
    "configs": sorted(p.name for p in (weights.parent.parent / "configs").iterdir()),
    "benchmarks_file": str(DEFAULT_BENCHMARKS_FILE) if DEFAULT_BENCHMARKS_FILE.is_file() else None,
}))
"""


@pytest.mark.slow
def test_installed_package_runs_from_outside_the_checkout(tmp_path: Path) -> None:
    """A wheel built from the sources, installed into a throwaway venv: its ``llmseg`` predicts with packaged weights.

    ``--no-deps --no-build-isolation --no-index`` downloads nothing: the venv sees this
    interpreter's packages (torch, setuptools, pip) through a .pth file, because a venv made from
    a venv inherits the *base* interpreter's site-packages, not this one's.
    """
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(env_dir)
    bin_dir = env_dir / "bin"
    python = bin_dir / "python"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"), "OMP_NUM_THREADS": "1"}
    purelib = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], outside, env
    ).stdout.strip()
    (Path(purelib) / "parent-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    pip = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", source]
    _run(pip, outside, env)

    inspected = json.loads(_run([python, "-c", INSPECT], outside, env).stdout)
    for key in ("llmseg", "weights", "prompts_dir", "benchmarks_file"):
        installed = Path(inspected[key]).resolve()
        assert installed.is_relative_to(env_dir.resolve()), f"{key} {installed} is not the installed copy"
    assert inspected["weight_files"] == ["region_encoder.safetensors", "selector.safetensors", "vlm.safetensors"]
    assert inspected["prompt"] == "ask_v1" and inspected["configs"] == [
        "deepspeed_zero2.yaml",
        "shapes-first-edition.json",
        "shapes-official.json",
    ]

    usage = _run([bin_dir / "llmseg", "--help"], outside, env).stdout
    assert usage.startswith("usage: llmseg")
    assert all(name in usage for name in (*COMMANDS, "datagen", "eval", "leaderboard"))

    # The dataset is the checkout's: data is not part of the package (predict reads any folder or Hub id).
    data = REPO / "data" / "shapes-mini"
    predict = ["predict", "--preset", "shapes", "--limit", "2", "--data", data, "--split", "validation"]
    _run([bin_dir / "llmseg", *predict, "--out", "installed.jsonl"], outside, env)
    _run([sys.executable, "-m", "llmseg", *predict, "--out", outside / "checkout.jsonl"], REPO, env)
    predictions = read_predictions(outside / "installed.jsonl")
    assert len(predictions) == 2 and predictions == read_predictions(outside / "checkout.jsonl")
