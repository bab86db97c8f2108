"""``python -m llmseg predict``: eval's predictions format, resuming, --limit, shards and their merge, CLI errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eval import read_predictions, rle
from llmseg.__main__ import main
from llmseg.data.writer import Sample, write_dataset
from llmseg.model.llmseg import LLMSeg
from llmseg.model.presets import get_preset
from llmseg.pipeline import Segmenter
from llmseg.predict import completed_ids, merge_parts, predict_split

COUNT = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def image_of(index: int) -> np.ndarray:
    image = np.full((40 + 4 * index, 56, 3), 128, np.uint8)
    image[4 : 20 + index, 4:24] = (220, 30, 35)
    image[24:38, 30:50] = (35, 80, 225)
    return image


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    samples = []
    for index in range(COUNT):
        image = image_of(index)
        mask = np.zeros(image.shape[:2], bool)
        mask[4 : 20 + index, 4:24] = True
        samples.append(
            Sample(
                id=f"s{index}",
                image=image,
                image_id=f"img{index}",
                query="the red square" if index % 2 else "Which shape is red?",
                answer="the red square",
                mask=mask,
                source="test",
                tags=["short"] if index % 2 else ["long"],
            )
        )
    write_dataset(folder, {"validation": samples}, title="predict test", description="five drawn scenes")
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    LLMSeg.from_config(get_preset("tiny")).save_pretrained(folder)
    return folder


def predict(*extra: str, model: Path, data: Path, out: Path) -> int:
    return main(
        ["predict", "--preset", str(model), "--data", str(data), "--split", "validation", "--out", str(out), *extra]
    )


def test_predictions_match_the_segmenter_and_eval_reads_them(tmp_path, data_dir, model_dir):
    out = tmp_path / "predictions.jsonl"
    assert predict(model=model_dir, data=data_dir, out=out) == 0
    predictions = read_predictions(out)
    assert sorted(predictions) == [f"s{index}" for index in range(COUNT)]
    segmenter = Segmenter(LLMSeg.from_pretrained(model_dir))
    for index in range(COUNT):
        query = "the red square" if index % 2 else "Which shape is red?"
        expected = segmenter.segment(image_of(index), query, sentence=not index % 2).mask
        np.testing.assert_array_equal(rle.decode(predictions[f"s{index}"]), expected)


def test_limit_and_resume_after_an_interrupted_write(tmp_path, data_dir, model_dir, monkeypatch, capsys):
    out = tmp_path / "predictions.jsonl"
    assert predict("--limit", "2", model=model_dir, data=data_dir, out=out) == 0
    assert sorted(read_predictions(out)) == ["s0", "s1"]
    with out.open("a") as file:
        file.write('{"id": "s2", "mask": {"size": [4')  # a run killed mid-line

    segmented = []
    original = Segmenter.segment

    def spy(self, image, query, **kwargs):
        segmented.append(query)
        return original(self, image, query, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", spy)
    assert predict(model=model_dir, data=data_dir, out=out) == 0
    assert len(segmented) == COUNT - 2
    assert sorted(read_predictions(out)) == [f"s{index}" for index in range(COUNT)]
    capsys.readouterr()
    assert predict(model=model_dir, data=data_dir, out=out) == 0  # nothing left to do
    assert len(segmented) == COUNT - 2
    assert f"{COUNT} of {COUNT} predictions already there are kept" in capsys.readouterr().err


def test_shards_write_parts_that_merge_into_one_file(tmp_path, data_dir, model_dir):
    out = tmp_path / "predictions.jsonl"
    parts = [
        predict_split(str(model_dir), str(data_dir), "validation", out, process_index=index, num_processes=2)
        for index in range(2)
    ]
    assert [part.name for part in parts] == ["predictions.jsonl.part0", "predictions.jsonl.part1"]
    assert completed_ids(parts[0]) == {"s0", "s1"} and completed_ids(parts[1]) == {"s2", "s3", "s4"}
    merge_parts(out, 2)
    assert sorted(read_predictions(out)) == [f"s{index}" for index in range(COUNT)]
    assert not any(part.exists() for part in parts)


def test_torch_threads_sets_the_intra_op_threads(tmp_path, data_dir, model_dir):
    before = torch.get_num_threads()
    try:
        out = tmp_path / "p.jsonl"
        assert predict("--limit", "1", "--torch-threads", "2", model=model_dir, data=data_dir, out=out) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert len(read_predictions(out)) == 1


def test_a_corrupt_line_in_the_middle_is_a_clear_error(tmp_path):
    out = tmp_path / "predictions.jsonl"
    out.write_text('not json\n{"id": "s0", "mask": {}}\n')
    with pytest.raises(ValueError, match="line 1 is not a prediction"):
        completed_ids(out)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--limit", "0"], "--limit"),
        (["--torch-threads", "0"], "--torch-threads"),
        (["--preset", "no-such-preset"], "no model folder, preset or Hub model"),
        (["--data", "/nonexistent/data"], "no dataset"),
        (["--split", "nope"], "no split"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, data_dir, model_dir, capsys, arguments, message):
    settings = {"--preset": str(model_dir), "--data": str(data_dir), "--split": "validation"}
    settings.update(dict(zip(arguments[::2], arguments[1::2], strict=True)))
    argv = ["predict", "--out", str(tmp_path / "out.jsonl")] + [item for pair in settings.items() for item in pair]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert not (tmp_path / "out.jsonl").exists()
