"""Shared helpers for the app tests: launch ``app.py`` in a subprocess, build prediction files.

Imported by ``test_app_*`` and ``test_browser_*`` modules; it holds no tests itself. The app runs
as a user would start it (``python app.py`` with flags), on 127.0.0.1 and a free port, with its
database and caches in a temporary folder. One server per test session is shared by the API and
browser tests (starting one costs seconds); tests that submit use their own user names.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from eval.rle import encode

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_DATA = ROOT / "data" / "shapes-mini"
HELDOUT_DATA = ROOT / "data" / "shapes-mini-heldout"
SHAPES_WEIGHTS = ROOT / "llmseg" / "presets" / "shapes" / "config.json"
# The trained `shapes` model when its weights are committed; until then the random `tiny` one,
# which exercises every code path but whose masks mean nothing.
PRESET = "shapes" if SHAPES_WEIGHTS.exists() else "tiny"
READY_TIMEOUT_S = 120


@dataclass
class AppServer:
    """A running ``app.py``: its URL, process, temporary folder and log file."""

    url: str
    process: subprocess.Popen[bytes]
    folder: Path
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    *flags: str, preset: str = PRESET, address_from_env: bool = False, benchmarks: list[dict] | None = None
) -> AppServer:
    """Start ``app.py`` with a fresh database and cache; return once it answers HTTP (or fail with its log).

    address_from_env: give the address as ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` (as Spaces
    do) instead of ``--host``/``--port``.
    benchmarks: entries of a benchmarks file to serve instead of ``--data`` (the held-out split).
    """
    folder = Path(tempfile.mkdtemp(prefix="llmseg-app-test-"))
    port = free_port()
    log = folder / "app.log"
    data_flags = ["--data", str(HELDOUT_DATA)]
    if benchmarks is not None:
        (folder / "benchmarks.json").write_text(json.dumps({"benchmarks": benchmarks}))
        data_flags = ["--benchmarks", str(folder / "benchmarks.json")]
    address = {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)} if address_from_env else {}
    command = [
        sys.executable,
        str(ROOT / "app.py"),
        *([] if address_from_env else ["--host", "127.0.0.1", "--port", str(port)]),
        "--preset",
        preset,
        "--db",
        str(folder / "db" / "leaderboard.sqlite"),
        *data_flags,
        "--examples",
        str(PUBLIC_DATA),
        *flags,
    ]
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("LLMSEG_", "GRADIO_", "SPACE_"))},
        "LLMSEG_APP_CACHE": str(folder / "cache"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(folder / "gradio"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(folder / "datasets"),
        **address,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT)
    server = AppServer(f"http://127.0.0.1:{port}", process, folder, log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{server.log_tail()}")
        if http_status(server.url + "/") == 200:
            return server
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"app.py did not answer within {READY_TIMEOUT_S} s:\n{server.log_tail()}")


SECOND_BENCHMARK = "shapes-copy"


@cache
def second_benchmark_baselines() -> Path:
    """The second benchmark's own baselines folder: only the empty baseline."""
    folder = Path(tempfile.mkdtemp(prefix="llmseg-app-test-baselines-"))
    shutil.copyfile(HELDOUT_DATA / "baselines" / "empty.jsonl", folder / "empty.jsonl")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@cache
def shared_server() -> AppServer:
    """The session's app with the default preset and two benchmarks, stopped when the test process exits.

    The first is the held-out shapes split; the second scores the same split under another name with
    its own baselines folder, so tests can tell the two tables apart.
    """
    server = launch(
        benchmarks=[
            {"name": "shapes", "data": str(HELDOUT_DATA), "description": "The shapes held-out split."},
            {
                "name": SECOND_BENCHMARK,
                "data": str(HELDOUT_DATA),
                "baselines": str(second_benchmark_baselines()),
                "description": "The same split again, as a second benchmark.",
            },
        ]
    )
    atexit.register(server.stop)
    return server


def http_status(url: str) -> int | None:
    """The status code of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@cache
def public_rows(split: str) -> list[dict]:
    """Public columns of a committed shapes-mini split (no masks are read)."""
    from eval.contract import load_split

    dataset = load_split(str(PUBLIC_DATA), split, require_ground_truth=False)
    return list(dataset.select_columns(["id", "image", "query", "tags", "height", "width"]))


def example_image(row: dict, folder: Path) -> Path:
    """Write one row's image as PNG (what a user would upload)."""
    path = folder / f"{row['id']}.png"
    row["image"].convert("RGB").save(path)
    return path


def centred_box_predictions(path: Path, *, margin: float = 0.25, skip: int = 0) -> Path:
    """A predictions file for the public test split: one centred box per question, minus the first ``skip`` ids."""
    lines = []
    for row in public_rows("test")[skip:]:
        height, width = int(row["height"]), int(row["width"])
        mask = np.zeros((height, width), dtype=bool)
        top, left = int(height * margin), int(width * margin)
        mask[top : height - top, left : width - left] = True
        lines.append(json.dumps({"id": row["id"], "mask": encode(mask)}))
    path.write_text("\n".join(lines) + "\n")
    return path
