"""Every stage of ``python -m llmseg.datagen`` on a small COCO-format fixture built here.

The API backend talks to a loopback OpenAI-compatible server whose answers are scripted per
image (recognised by a category only that image has): valid JSON, malformed JSON, unknown ids,
a category leak with other faults, and a 429 before success.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from eval import write_predictions
from llmseg.datagen import ask as ask_stage
from llmseg.datagen.__main__ import main
from llmseg.datagen.backends import OpenAIBackend
from llmseg.datagen.records import JsonlAppender, load_images, read_jsonl

WIDTH, HEIGHT = 64, 48
CATEGORIES = ["person", "dog", "frisbee", "laptop", "book", "umbrella", "bench", "kite", "toaster", "cup", "bottle"]
CATEGORIES += ["chair", "ant", "bat_(animal)"]
# image name -> (category, XYXY rectangle) per object; names say what the server scripts for it
IMAGES: dict[str, list[tuple[str, tuple[int, int, int, int]]]] = {
    "valid": [
        ("person", (2, 2, 22, 22)),
        ("dog", (30, 30, 46, 42)),
        ("frisbee", (50, 5, 56, 11)),
        ("ant", (60, 0, 61, 2)),
    ],
    "unknown_id": [("laptop", (0, 0, 30, 20)), ("cup", (40, 30, 50, 40))],
    "malformed": [("book", (0, 0, 10, 10)), ("chair", (20, 20, 40, 40))],
    "leak": [("umbrella", (0, 0, 20, 30)), ("person", (25, 5, 40, 40)), ("bench", (42, 30, 62, 46))],
    "rate_limited": [("kite", (10, 5, 30, 20)), ("person", (35, 20, 45, 45))],
    "complex": [(c, (6 * i, 2 * i, 6 * i + 5, 2 * i + 8)) for i, c in enumerate(["toaster", "cup", "bottle", "chair"])]
    + [("person", (30, 20, 50, 46)), ("dog", (52, 30, 62, 40))],
    "one_category": [("dog", (0, 0, 10, 10)), ("dog", (20, 20, 30, 30))],
    "missing": [("dog", (0, 0, 10, 10)), ("cup", (20, 20, 30, 30))],
    "not_exhaustive": [("bench", (0, 0, 10, 10)), ("cup", (20, 20, 30, 30))],
    "wrong_size": [("bench", (0, 0, 10, 10)), ("cup", (20, 20, 30, 30))],
}
ASKED = ["valid", "unknown_id", "malformed", "leak", "rate_limited", "complex"]
EXPECTED_KEPT = {"valid": 3, "unknown_id": 1, "leak": 2, "rate_limited": 1, "complex": 1}
EXPECTED_REJECTED = {
    "malformed-json": 1,
    "unknown-object": 1,
    "leak": 1,
    "duplicate": 1,
    "empty-text": 1,
    "too-long": 1,
    "no-object": 1,
    "malformed-item": 1,
}


def _polygon(box: tuple[int, int, int, int]) -> list[float]:
    x0, y0, x1, y1 = box
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _mask(box: tuple[int, int, int, int]) -> np.ndarray:
    """The rectangle as pycocotools rasterises the polygon (independent of the pipeline code)."""
    return mask_utils.decode(mask_utils.frPyObjects([_polygon(box)], HEIGHT, WIDTH)[0]).astype(bool)


def build_fixture(root: Path) -> tuple[Path, Path]:
    """A COCO instances JSON and JPEG images (file stems = the IMAGES names; 'missing' has no file)."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    category_ids = {name: i + 1 for i, name in enumerate(CATEGORIES)}
    data: dict = {"images": [], "annotations": [], "categories": []}
    for name, cid in category_ids.items():
        data["categories"].append({"id": cid, "name": name, "synonyms": [name]})
    for image_id, (name, objects) in enumerate(IMAGES.items(), start=1):
        entry = {"id": image_id, "file_name": f"{name}.jpg", "height": HEIGHT, "width": WIDTH}
        if name == "not_exhaustive":
            entry["not_exhaustive_category_ids"] = [category_ids["cup"]]
        data["images"].append(entry)
        if name != "missing":
            shape = (HEIGHT, WIDTH + 1 if name == "wrong_size" else WIDTH, 3)
            pixels = rng.integers(0, 255, shape, dtype=np.uint8)
            Image.fromarray(pixels).save(images_dir / f"{name}.jpg", quality=90)
        for category, box in objects:
            x0, y0, x1, y1 = box
            data["annotations"].append(
                {
                    "id": len(data["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[category],
                    "segmentation": [_polygon(box)],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": float((x1 - x0) * (y1 - y0)),
                    "iscrowd": 0,
                }
            )
    # a crowd region in the complex image: dropped by default, as uncompressed RLE
    crowd = mask_utils.encode(np.asfortranarray(_mask((0, 40, 20, 48)).astype(np.uint8)))
    runs = _uncompressed(_mask((0, 40, 20, 48)))
    assert mask_utils.area(crowd) == sum(runs[1::2])
    data["annotations"].append(
        {
            "id": 999,
            "image_id": ASKED.index("complex") + 1,
            "category_id": category_ids["person"],
            "segmentation": {"size": [HEIGHT, WIDTH], "counts": runs},
            "bbox": [0, 40, 20, 8],
            "area": 160.0,
            "iscrowd": 1,
        }
    )
    annotations = root / "instances.json"
    annotations.write_text(json.dumps(data))
    return annotations, images_dir


def _uncompressed(mask: np.ndarray) -> list[int]:
    """Column-major run lengths starting with background, as COCO's uncompressed RLE."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def object_ids(prompt: str) -> dict[str, int]:
    """Category -> id as the prompt lists them ("3. frisbee, box ...")."""
    return {m[2]: int(m[1]) for m in re.finditer(r"^(\d+)\. (.+?), box", prompt, re.MULTILINE)}


def _questions(*items: tuple[str, list[int]]) -> str:
    return json.dumps(
        {
            "questions": [
                {"question": q, "answer": "Those ones, because of what they do.", "object_ids": i} for q, i in items
            ]
        }
    )


def scripted_reply(image: str, ids: dict[str, int]) -> str:
    """What the fake LLM answers for each fixture image."""
    if image == "valid":
        body = _questions(
            ("What could the animal in the park catch in mid-air?", [ids["frisbee"]]),
            ("Which living things here could play fetch together?", [ids["dog"], ids["person"]]),
            ("Who would throw the flying disc?", [ids["person"]]),
        )
        return "```json\n" + body + "\n```"
    if image == "unknown_id":
        return _questions(("What would you type an email on?", [ids["laptop"]]), ("Where is the giraffe?", [99]))
    if image == "malformed":
        return "Sure! {questions: [{question: What can you read?, object_ids: [1]}"
    if image == "leak":
        sit = ids["bench"]
        return json.dumps(
            {
                "questions": [
                    {
                        "question": "Which umbrellas keep the rain off?",
                        "answer": "That.",
                        "object_ids": [ids["umbrella"]],
                    },
                    {"question": "What could you sit on?", "answer": "The bench.", "object_ids": [sit]},
                    {"question": "What could you sit on", "answer": "The bench.", "object_ids": [sit]},
                    {"question": "", "answer": "The bench.", "object_ids": [sit]},
                    {"question": "Why " + "really " * 70 + "?", "answer": "The bench.", "object_ids": [sit]},
                    {"question": "What is nothing?", "answer": "Nothing.", "object_ids": []},
                    "hello",
                    {"question": "Where could a person rest?", "answer": "The bench.", "object_ids": [sit]},
                ]
            }
        )
    if image == "rate_limited":
        return _questions(("What is flying high on the wind?", [ids["kite"]]))
    if image == "complex":
        return _questions(("What browns bread, and what would you drink from beside it?", [ids["toaster"], ids["cup"]]))
    raise AssertionError(f"no script for {image}")


MARKERS = {"frisbee": "valid", "laptop": "unknown_id", "book": "malformed", "umbrella": "leak", "kite": "rate_limited"}
MARKERS["toaster"] = "complex"


class ScriptedLLM:
    """A loopback OpenAI-compatible server; ``hits`` counts HTTP requests per fixture image ("describe" for images)."""

    def __init__(self, api_key: str) -> None:
        self.hits: Counter[str] = Counter()
        self.models: dict[str, set[str]] = {"ask": set(), "describe": set()}
        self.ask_prompts_with_description = 0
        self.lock = threading.Lock()
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions" or self.headers.get("Authorization") != f"Bearer {api_key}":
                    return self._send(401, {"error": "unauthorized"})
                prompt = body["messages"][-1]["content"]
                if not isinstance(prompt, str):  # a describe request: an image and a text part
                    assert prompt[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
                    with llm.lock:
                        llm.hits["describe"] += 1
                        llm.models["describe"].add(body["model"])
                    return self._reply(body, "A scene description of the photo.")
                ids = object_ids(prompt)
                image = next(image for marker, image in MARKERS.items() if marker in ids)
                with llm.lock:
                    llm.hits[image] += 1
                    llm.models["ask"].add(body["model"])
                    first = llm.hits[image] == 1
                    llm.ask_prompts_with_description += "A scene description of the photo." in prompt
                if image == "rate_limited" and first:
                    return self._send(429, {"error": "slow down"}, {"Retry-After": "0"})
                self._reply(body, scripted_reply(image, ids))

            def _reply(self, body: dict, text: str) -> None:
                message = {"role": "assistant", "content": text}
                usage = {"prompt_tokens": 100, "completion_tokens": 20}
                self._send(200, {"model": body["model"], "choices": [{"message": message}], "usage": usage})

            def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def total(self) -> int:
        return sum(self.hits.values())


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedLLM]:
    monkeypatch.setenv("LLMSEG_API_KEY", "sk-scripted")
    server = ScriptedLLM("sk-scripted")
    monkeypatch.setenv("LLMSEG_API_BASE", server.base)
    monkeypatch.setenv("LLMSEG_API_MODEL", "scripted-gpt")
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def fixture(tmp_path: Path) -> tuple[Path, Path]:
    return build_fixture(tmp_path / "coco")


def _select_args(fixture: tuple[Path, Path], work: Path) -> list[str]:
    annotations, images = fixture
    return ["--work", str(work), "--annotations", str(annotations), "--images", str(images), "--source", "coco"]


def _run(fixture: tuple[Path, Path], work: Path, out: Path, *extra: str) -> int:
    args = ["run", *_select_args(fixture, work), "--skip-bad", "--out", str(out), "--splits", "test=1"]
    return main([*args, "--concurrency", "3", *extra])


def _summary(work: Path) -> dict:
    return json.loads((work / "summary.json").read_text())


def test_select_applies_the_rules_and_reports_what_it_dropped(fixture: tuple[Path, Path], tmp_path: Path) -> None:
    work = tmp_path / "work"
    assert main(["select", *_select_args(fixture, work), "--skip-bad"]) == 0
    records = {r.image_id: r for r in load_images(work)}
    assert sorted(records) == sorted(ASKED)
    assert {name: r.level for name, r in records.items()} == {
        name: "complex" if name == "complex" else "simple" for name in ASKED
    }
    dropped = _summary(work)["select"]["dropped"]
    assert dropped == {"missing-image": 1, "not-exhaustive": 1, "size-mismatch": 1, "too-few-categories": 1}
    valid = records["valid"]
    assert [o.category for o in valid.objects] == ["person", "dog", "frisbee"]  # by area; the 2-pixel ant dropped
    for obj, (category, box) in zip(valid.objects, IMAGES["valid"], strict=False):
        assert obj.category == category
        assert np.array_equal(mask_utils.decode({**obj.mask, "counts": obj.mask["counts"].encode()}), _mask(box))
    assert len(records["complex"].objects) == 6  # the crowd region is not an object


def test_select_without_skip_bad_names_the_first_bad_image(fixture, tmp_path, capsys) -> None:
    assert main(["select", *_select_args(fixture, tmp_path / "work")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "--skip-bad" in error
    assert ("missing.jpg does not exist" in error) != ("wrong_size.jpg is 65x48, the annotations say 64x48" in error)


def test_annotation_files_that_are_not_coco_instances_are_a_clear_error(fixture, tmp_path, capsys) -> None:
    annotations, images = fixture
    data = json.loads(annotations.read_text())
    cases = {"not-json": "{", "no-images": json.dumps({"annotations": [], "categories": []})}
    cases["unknown-category"] = json.dumps({**data, "categories": data["categories"][1:]})
    cases["no-category-id"] = json.dumps({**data, "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}]})
    for name, text in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        args = ["--work", str(tmp_path / name), "--annotations", str(path), "--images", str(images), "--source", "x"]
        assert main(["select", *args]) == 2, name
        error = capsys.readouterr().err
        assert error.startswith(f"error: {path}") and "\n" not in error.rstrip(), error


def test_full_run_keeps_the_right_samples_and_counts_each_rejection(fixture, llm: ScriptedLLM, tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    assert _run(fixture, work, out) == 0
    summary = _summary(work)
    assert summary["write"]["rejected"] == EXPECTED_REJECTED
    assert summary["write"]["kept"] == sum(EXPECTED_KEPT.values())
    assert summary["write"]["tags"] == {"complex": 1, "multi-target": 2, "simple": 7}
    # one request per image, plus the retry after the 429
    assert llm.hits == Counter({image: 2 if image == "rate_limited" else 1 for image in ASKED})
    assert summary["ask"]["requests"] == len(ASKED) and summary["ask"]["prompt_tokens"] == 100 * len(ASKED)
    assert summary["ask"]["completion_tokens"] == 20 * len(ASKED) and summary["ask"]["failed"] == 0
    assert summary["ask"]["retries"] == 1

    rows = datasets.load_dataset(str(out), split="test")
    assert Counter(row["image_id"] for row in rows) == Counter(EXPECTED_KEPT)
    by_id = {row["id"]: row for row in rows}
    fetch = by_id["valid-1"]  # the second question of the valid reply: dog + person
    assert fetch["tags"] == ["simple", "multi-target"] and fetch["source"] == "coco"
    assert fetch["query"] == "Which living things here could play fetch together?"
    expected = _mask(IMAGES["valid"][0][1]) | _mask(IMAGES["valid"][1][1])
    assert np.array_equal(np.asarray(fetch["mask"]) > 0, expected)
    assert {row["id"] for row in rows if row["image_id"] == "leak"} == {"leak-1", "leak-7"}
    rejected = [json.loads(line) for line in (work / "rejected.jsonl").read_text().splitlines()]
    assert Counter(r["reason"] for r in rejected) == Counter(EXPECTED_REJECTED)

    # a re-run of everything is free and writes the same bytes
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _run(fixture, work, out) == 0
    assert llm.total() == len(ASKED) + 1
    assert _summary(work)["ask"]["already_answered"] == len(ASKED)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_spend_cap_stops_mid_run_and_a_rerun_resumes_without_duplicates(fixture, llm, tmp_path, capsys) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    assert _run(fixture, work, out, "--max-requests", "2") == 0
    assert "spend cap" in capsys.readouterr().out
    ask = _summary(work)["ask"]
    assert (ask["requests"], ask["not_sent"], ask["stopped"]) == (2, len(ASKED) - 2, "spend-cap")
    assert not out.exists()  # `run` does not write a partial dataset
    lines = (work / "responses.jsonl").read_text().splitlines()
    assert len(lines) == 2

    assert _run(fixture, work, out) == 0
    answered = [json.loads(line)["image_id"] for line in (work / "responses.jsonl").read_text().splitlines()]
    assert sorted(answered) == sorted(ASKED)  # every image once
    assert sum(llm.hits.values()) == len(ASKED) + 1
    assert _summary(work)["write"]["kept"] == sum(EXPECTED_KEPT.values())


def test_an_exception_mid_run_loses_nothing_paid_for(fixture, llm, tmp_path, monkeypatch) -> None:
    work = tmp_path / "work"
    assert main(["select", *_select_args(fixture, work), "--skip-bad"]) == 0
    appended = []
    original = JsonlAppender.append

    def failing_append(self: JsonlAppender, record: dict) -> None:
        if len(appended) == 3:
            raise RuntimeError("power cut")
        appended.append(record["image_id"])
        original(self, record)

    monkeypatch.setattr(JsonlAppender, "append", failing_append)
    backend = OpenAIBackend(llm.base, "scripted-gpt", "sk-scripted", concurrency=2, backoff=0.0)
    with pytest.raises(RuntimeError, match="power cut"):
        ask_stage.run_ask(work, backend)
    assert len(read_jsonl(work / "responses.jsonl", "image_id")) == 3
    monkeypatch.setattr(JsonlAppender, "append", original)

    summary = ask_stage.run_ask(work, backend)
    assert summary["already_answered"] == 3
    lines = (work / "responses.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["image_id"] for line in lines) == sorted(ASKED)
    # answers received before the failure came from the cache, not the server
    assert llm.total() == len(ASKED) + 1
    assert summary["requests"] + summary["cache_hits"] == len(ASKED) - 3


def test_dry_run_prints_prompts_and_sends_nothing(fixture, llm, tmp_path, capsys) -> None:
    work = tmp_path / "work"
    assert main(["select", *_select_args(fixture, work), "--skip-bad"]) == 0
    capsys.readouterr()
    assert main(["ask", "--work", str(work), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert llm.total() == 0
    assert printed.count("=====") == 2 * len(ASKED)
    assert "1. person, box [2, 2, 22, 22]" in printed and "ant" not in object_ids(printed)
    assert not read_jsonl(work / "responses.jsonl", "image_id")
    assert _summary(work)["ask"]["requests"] == len(ASKED) and _summary(work)["ask"]["dry_run"]


def test_describe_stage_sends_images_and_feeds_descriptions_into_the_ask_prompt(fixture, llm, tmp_path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    assert _run(fixture, work, out, "--describe-backend", "api", "--describe-model", "scripted-vision") == 0
    assert llm.hits["describe"] == len(ASKED)
    assert llm.models["describe"] == {"scripted-vision"} and llm.models["ask"] == {"scripted-gpt"}
    descriptions = read_jsonl(work / "descriptions.jsonl", "image_id")
    assert sorted(descriptions) == sorted(ASKED)
    assert llm.ask_prompts_with_description == len(ASKED) + 1  # every ask request, the retried one too
    assert _summary(work)["ask"]["with_description"] == len(ASKED)
    assert _run(fixture, work, out, "--describe-backend", "api", "--describe-model", "scripted-vision") == 0
    assert llm.hits["describe"] == len(ASKED) and _summary(work)["describe"]["already_answered"] == len(ASKED)


def test_output_scores_with_the_eval_cli(fixture, llm, tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    assert _run(fixture, work, out) == 0
    rows = datasets.load_dataset(str(out), split="test")
    predictions = tmp_path / "predictions.jsonl"
    # perfect predictions for every sample except one, which predicts nothing
    items = [(row["id"], np.asarray(row["mask"]) > 0) for row in rows]
    items[0] = (items[0][0], np.zeros_like(items[0][1]))
    write_predictions(predictions, items)
    result = subprocess.run(
        [sys.executable, "-m", "eval", str(predictions), "--data", str(out), "--split", "test", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout)
    n = sum(EXPECTED_KEPT.values())
    assert report["n"] == n
    assert report["giou"] == pytest.approx((n - 1) / n)
    assert report["by_tag"]["multi-target"]["n"] == 2 and report["by_tag"]["complex"]["n"] == 1
