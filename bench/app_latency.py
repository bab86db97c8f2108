"""How fast the app is ready, and how long ``/segment`` takes through the API.

Launches ``python app.py`` as a user would (fresh database, 127.0.0.1, a free port) and measures:
- time to serve: from the command to the page answering HTTP;
- time to model ready: until the background preload reports the model loaded;
- ``/segment`` latency through ``gradio_client`` (fetching the result images, as by default, and
  not fetching them) on images of the public validation split: the
  first question about an image (proposals and image features computed), a second, different
  question about the same image (image work served from the cache) and the first question again.
The reference, in the same run, is the same questions asked of an in-process ``Segmenter``
(no HTTP, no gradio) right after each API call: the ratio is the app's overhead. Prints a table and writes
``bench/results/app_latency.json``.

    .venv/bin/python bench/app_latency.py [--preset shapes] [--images 5] [--random-weights]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from eval.contract import load_split  # noqa: E402
from llmseg.model.llmseg import LLMSeg  # noqa: E402
from llmseg.pipeline import Segmenter  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "app_latency.json"
PUBLIC_DATA = ROOT / "data" / "shapes-mini"
SECOND_QUESTION = "Segment the largest object."
READY_TARGET_S = 30.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str) -> float:
    """Poll ``condition`` until true; return the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if condition():
            return time.perf_counter() - start
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")


def answers_http(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes")
    parser.add_argument("--images", type=int, default=5, help="validation images to ask about, per API client")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="serve the preset's architecture with random weights (saved to a temporary folder): "
        "load and run times before its trained weights exist",
    )
    args = parser.parse_args()

    validation = load_split(str(PUBLIC_DATA), "validation", require_ground_truth=False)
    rows = list(validation.select(range(2 * args.images)))  # half for each API client
    folder = Path(tempfile.mkdtemp(prefix="llmseg-app-bench-"))
    images = []
    for row in rows:
        path = folder / f"{row['id']}.png"
        row["image"].convert("RGB").save(path)
        images.append((path, row["query"]))

    model = args.preset
    if args.random_weights:
        from llmseg.model.presets import get_preset

        model = str(LLMSeg.from_config(get_preset(args.preset)).save_pretrained(folder / "model"))

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), "--preset", model]
    command += ["--db", str(folder / "db" / "leaderboard.sqlite")]
    env = {**os.environ, "LLMSEG_APP_CACHE": str(folder / "cache"), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = (folder / "app.log").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: answers_http(url + "/"), 180, "the app answering HTTP")
        time_to_serve = time.perf_counter() - started

        from gradio_client import Client, handle_file

        client = Client(url, verbose=False)
        # The same calls without fetching the eight result images: what an API user who only needs
        # the mask (COCO RLE in the JSON result) waits for.
        lean_client = Client(url, verbose=False, download_files=False)
        wait_for(lambda: "Model loaded" in client.predict(api_name="/model_status"), 300, "the model loading")
        time_to_model = time.perf_counter() - started

        def ask(path: Path, question: str, through: Client = client) -> None:
            through.predict(handle_file(str(path)), question, api_name="/segment")

        # The reference in the same process as the client, asked right after the API each time, so
        # the load of a shared machine weighs on both alike.
        segmenter = Segmenter(LLMSeg.from_pretrained(model))

        def ask_directly(path: Path, question: str) -> None:
            image = np.asarray(Image.open(path).convert("RGB"))  # the server decodes the upload too
            segmenter.segment(image, question, answer=True)  # the app asks for the text answer too

        kinds = ("first", "second_question", "same_question_again")
        api: dict[str, list[float]] = {kind: [] for kind in kinds}
        lean: dict[str, list[float]] = {kind: [] for kind in kinds}
        direct: dict[str, list[float]] = {kind: [] for kind in kinds}
        # Each client gets its own images, so its first question about one is a cold one too.
        for through, timings, batch in (
            (client, api, images[: args.images]),
            (lean_client, lean, images[args.images :]),
        ):
            for path, question in batch:
                for kind, asked in zip(kinds, (question, SECOND_QUESTION, question), strict=True):
                    timings[kind].append(timed(ask, path, asked, through))
                    direct[kind].append(timed(ask_directly, path, asked))
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)

    medians = {
        kind: {
            "api_ms": round(1000 * statistics.median(api[kind]), 1),
            "api_without_downloads_ms": round(1000 * statistics.median(lean[kind]), 1),
            "in_process_ms": round(1000 * statistics.median(direct[kind]), 1),
            "api_over_in_process": round(statistics.median(api[kind]) / statistics.median(direct[kind]), 2),
            "api_without_downloads_over_in_process": round(
                statistics.median(lean[kind]) / statistics.median(direct[kind]), 2
            ),
        }
        for kind in api
    }
    result = {
        "preset": args.preset,
        "random_weights": args.random_weights,
        "images_per_client": args.images,
        "time_to_serve_s": round(time_to_serve, 2),
        "time_to_model_ready_s": round(time_to_model, 2),
        "ready_target_s": READY_TARGET_S,
        "segment_median": medians,
        "repeat_over_first_api": round(medians["second_question"]["api_ms"] / medians["first"]["api_ms"], 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), python {platform.python_version()}",
    }
    weights = " (random weights)" if args.random_weights else ""
    print(
        f"preset {args.preset}{weights}: serving after {time_to_serve:.1f} s, model ready after {time_to_model:.1f} s"
    )
    print(
        f"{'/segment (median of ' + str(args.images) + ')':<28}{'API ms':>9}{'ratio':>7}"
        f"{'no downloads ms':>17}{'ratio':>7}{'in-process ms':>15}"
    )
    for kind, row in medians.items():
        print(
            f"{kind:<28}{row['api_ms']:>9.1f}{row['api_over_in_process']:>7.2f}"
            f"{row['api_without_downloads_ms']:>17.1f}{row['api_without_downloads_over_in_process']:>7.2f}"
            f"{row['in_process_ms']:>15.1f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
