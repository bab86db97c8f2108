"""The launched app through its public API (``gradio_client``) and its HTTP file routes."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from test_app_support import (
    HELDOUT_DATA,
    PRESET,
    SECOND_BENCHMARK,
    centred_box_predictions,
    example_image,
    http_status,
    launch,
    public_rows,
    second_benchmark_baselines,
    shared_server,
)

from eval import rle


@pytest.fixture(scope="module")
def client() -> Client:
    return Client(shared_server().url, verbose=False)


def segment(client: Client, image: Path, question: str) -> dict:
    annotated, answer, proposals, gallery, timings, details = client.predict(
        handle_file(str(image)), question, api_name="/segment"
    )
    return {"annotated": annotated, "answer": answer, "proposals": proposals, "gallery": gallery, "details": details}


def annotation_mask(annotated: dict) -> np.ndarray | None:
    """The overlay's mask as HxW bool (its alpha channel), or None when nothing is annotated."""
    if not annotated["annotations"]:
        return None
    (annotation,) = annotated["annotations"]
    return np.asarray(Image.open(annotation["image"]))[..., 3] > 0


def test_segment_returns_one_consistent_answer(client: Client, tmp_path: Path) -> None:
    row = public_rows("validation")[0]
    result = segment(client, example_image(row, tmp_path), row["query"])

    mask = rle.decode(result["details"]["mask"])
    assert mask.shape == (row["height"], row["width"])
    assert int(mask.sum()) == result["details"]["mask_area"]
    overlay = annotation_mask(result["annotated"])
    if mask.any():
        np.testing.assert_array_equal(overlay, mask)
    else:
        assert overlay is None
    base = Image.open(result["annotated"]["image"])
    assert base.size == (row["width"], row["height"])

    table = result["proposals"]
    assert table["headers"] == ["proposal", "selected", "IoP", "similarity", "area %"]
    iop = [r[2] for r in table["data"]]
    assert iop == sorted(iop, reverse=True)
    assert sum(r[1] == "yes" for r in table["data"]) == len(result["details"]["selected"])
    assert 1 <= len(result["gallery"]) <= min(6, len(table["data"]))
    assert isinstance(result["answer"], str)


def test_second_question_on_the_same_image_reuses_the_image_work(client: Client, tmp_path: Path) -> None:
    row = public_rows("validation")[1]
    image = example_image(row, tmp_path)
    first = segment(client, image, row["query"])
    second = segment(client, image, "the largest shape")
    assert first["details"]["cached"] is False
    assert second["details"]["cached"] is True
    assert second["details"]["timings"]["proposals"] == 0.0


@pytest.mark.skipif(PRESET != "shapes", reason="needs the trained `shapes` weights (llmseg/presets/shapes)")
def test_shapes_model_segments_a_target_and_finds_nothing_for_a_no_target_question(
    client: Client, tmp_path: Path
) -> None:
    """The API gives the mask the model gives: non-empty for a question with a target, empty for a
    no-target question the model recognises as such (the embedded model gets about half of the
    no-target questions right, so the test asks one that it answers in-process with an empty mask)."""
    from llmseg.model.llmseg import LLMSeg
    from llmseg.pipeline import Segmenter

    segmenter = Segmenter(LLMSeg.from_pretrained("shapes"))
    rows = public_rows("validation")
    with_target = next(
        r for r in rows if "no-target" not in r["tags"] and segmenter.segment(r["image"], r["query"]).mask.any()
    )
    without_target = next(
        r for r in rows if "no-target" in r["tags"] and not segmenter.segment(r["image"], r["query"]).mask.any()
    )
    found = segment(client, example_image(with_target, tmp_path), with_target["query"])
    nothing = segment(client, example_image(without_target, tmp_path), without_target["query"])
    expected_area = int(segmenter.segment(with_target["image"], with_target["query"]).mask.sum())
    assert found["details"]["mask_area"] == expected_area > 0
    assert annotation_mask(found["annotated"]) is not None
    assert nothing["details"]["mask_area"] == 0
    assert annotation_mask(nothing["annotated"]) is None


def test_segment_without_an_image_says_what_to_do(client: Client) -> None:
    with pytest.raises(AppError, match="Upload an image"):
        client.predict(None, "the red star", api_name="/segment")


def test_valid_submission_is_scored_and_ranked(client: Client, tmp_path: Path) -> None:
    model = f"centred-box-{uuid.uuid4().hex[:6]}"
    message, result = client.predict(
        handle_file(str(centred_box_predictions(tmp_path / "boxes.jsonl"))),
        model,
        "api-tester",
        "https://example.org/boxes",
        "a centred box per question",
        api_name="/submit",
    )
    assert result["status"] == "scored"
    assert 0.0 <= result["giou"] <= 1.0 and 0.0 <= result["ciou"] <= 1.0
    assert result["n"] == len(public_rows("test"))
    assert f"#{result['rank']}" in message

    rows = client.predict(True, api_name="/leaderboard")
    (row,) = [r for r in rows if r["model"] == model]
    assert row["rank"] == result["rank"]
    assert row["link"] == "https://example.org/boxes"
    assert row["gIoU"] == pytest.approx(100 * result["giou"], abs=0.05)


def test_invalid_submission_returns_the_validation_message(client: Client, tmp_path: Path) -> None:
    missing = public_rows("test")[0]["id"]
    message, result = client.predict(
        handle_file(str(centred_box_predictions(tmp_path / "short.jsonl", skip=1))),
        "incomplete",
        "api-tester",
        "",
        "",
        api_name="/submit",
    )
    assert result["status"] == "rejected"
    assert missing in result["error"]
    assert result["error"] in message
    rows = client.predict(True, api_name="/leaderboard")
    assert all(r["model"] != "incomplete" for r in rows)


def test_leaderboard_lists_the_baselines_without_a_rank(client: Client) -> None:
    baselines = {path.stem for path in (HELDOUT_DATA / "baselines").glob("*.jsonl")}
    assert baselines, "the held-out split should ship baseline prediction files"
    rows = client.predict(False, api_name="/leaderboard")
    listed = {r["model"] for r in rows if r["baseline"]}
    assert listed == baselines
    assert all(r["rank"] is None for r in rows if r["baseline"])


def test_benchmarks_are_listed_default_first_without_their_data_location(client: Client) -> None:
    listed = client.predict(api_name="/benchmarks")
    assert [b["name"] for b in listed] == ["shapes", SECOND_BENCHMARK]
    assert listed[0] == {
        "name": "shapes",
        "split": "test",
        "description": "The shapes held-out split.",
        "private_per_sample": False,
    }


def test_submit_to_a_named_benchmark_with_a_declared_protocol(client: Client, tmp_path: Path) -> None:
    model = f"second-{uuid.uuid4().hex[:6]}"
    _, result = client.predict(
        handle_file(str(centred_box_predictions(tmp_path / "boxes.jsonl", margin=0.3))),
        model,
        "api-tester",
        "",
        "",
        SECOND_BENCHMARK,
        "zero-shot",
        "LLM-Seg40K train",
        "test",
        "7B",
        "https://github.com/example/code",
        "https://arxiv.org/abs/2404.08767",
        api_name="/submit",
    )
    assert result["status"] == "scored" and result["benchmark"] == SECOND_BENCHMARK
    assert (result["protocol"], result["checkpoint_selection"], result["params"]) == ("zero-shot", "test", 7e9)
    (row,) = [r for r in client.predict(True, SECOND_BENCHMARK, api_name="/leaderboard") if r["model"] == model]
    assert (row["protocol"], row["checkpoint_selection"], row["trained_on"]) == (
        "zero-shot",
        "test",
        "LLM-Seg40K train",
    )
    assert (row["code"], row["paper"]) == ("https://github.com/example/code", "https://arxiv.org/abs/2404.08767")
    assert all(r["model"] != model for r in client.predict(True, api_name="/leaderboard"))  # not on the default


def test_each_benchmark_lists_its_own_baselines(client: Client) -> None:
    second = client.predict(False, SECOND_BENCHMARK, api_name="/leaderboard")
    assert {r["model"] for r in second if r["baseline"]} == {"empty"}


def test_a_bad_declaration_or_benchmark_is_returned_as_the_rejection(client: Client, tmp_path: Path) -> None:
    path = centred_box_predictions(tmp_path / "boxes.jsonl", margin=0.35)
    common = [handle_file(str(path)), "refused", "api-tester", "", ""]
    with pytest.raises(
        AppError, match="'few-shot' .* is not in the list of choices: \\['zero-shot', 'fine-tuned', 'other'\\]"
    ):
        client.predict(*common, "shapes", "few-shot", api_name="/submit")  # the radio's own check
    _, wrong_params = client.predict(*common, "shapes", "zero-shot", "", "last", "lots", api_name="/submit")
    assert (
        wrong_params["status"] == "rejected"
        and "the parameter count 'lots' is not a positive number" in (wrong_params["error"])
    )
    _, wrong_benchmark = client.predict(*common, "nowhere", api_name="/submit")
    assert wrong_benchmark["status"] == "rejected" and "there is no benchmark 'nowhere'" in wrong_benchmark["error"]
    with pytest.raises(AppError, match="there is no benchmark 'nowhere'"):
        client.predict(False, "nowhere", api_name="/leaderboard")


def test_ground_truth_and_database_are_not_served_as_files() -> None:
    server = shared_server()
    # the ground-truth shards, the baselines derived from them (the oracle's masks), the database
    secrets = [p for p in HELDOUT_DATA.rglob("*") if p.is_file()] + list((server.folder / "db").rglob("*.sqlite"))
    secrets += list(second_benchmark_baselines().glob("*.jsonl"))  # a benchmark's baselines outside its data
    assert {p.suffix for p in secrets} >= {".parquet", ".jsonl", ".sqlite"}
    for path in secrets:
        url = f"{server.url}/gradio_api/file={urllib.parse.quote(str(path))}"
        assert http_status(url) == 403, path
    config = json.dumps(json.loads(urllib.request.urlopen(server.url + "/config", timeout=10).read()))
    assert HELDOUT_DATA.name not in config


def test_model_failure_leaves_the_leaderboard_working(tmp_path: Path) -> None:
    # also the Spaces way of giving the address: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
    server = launch("--no-preload", preset=str(tmp_path / "no-such-model"), address_from_env=True)
    try:
        broken = Client(server.url, verbose=False)
        row = public_rows("validation")[0]
        with pytest.raises(AppError, match="could not be loaded"):
            broken.predict(handle_file(str(example_image(row, tmp_path))), row["query"], api_name="/segment")
        assert "could not be loaded" in broken.predict(api_name="/model_status")
        _, result = broken.predict(
            handle_file(str(centred_box_predictions(tmp_path / "boxes.jsonl"))),
            "boxes-without-a-model",
            "api-tester",
            "",
            "",
            api_name="/submit",
        )
        assert result["status"] == "scored"
        assert any(r["model"] == "boxes-without-a-model" for r in broken.predict(False, api_name="/leaderboard"))
    finally:
        server.stop()
