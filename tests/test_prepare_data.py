"""The ``prepare`` step: proposals computed once per image, with IoU/IoP targets per question."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eval import rle
from eval.contract import load_split
from llmseg.__main__ import main
from llmseg.data.shapes import make_shapes
from llmseg.model.losses import overlap_targets
from llmseg.model.presets import get_preset
from llmseg.model.proposals import build_proposal_generator
from llmseg.prepare import image_array, load_prepared, prepare, prepared_rows
from llmseg.train import TrainingData

MINI = str(Path(__file__).resolve().parent.parent / "data" / "shapes-mini")
LIMIT = 5


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first questions of the committed shapes-mini validation split, prepared for ``tiny``."""
    out = tmp_path_factory.mktemp("prepared")
    path = prepare(get_preset("tiny"), MINI, "validation", out, limit=LIMIT)
    assert path == out / "validation.parquet"
    return out


def test_rows_follow_the_split_and_store_the_generators_proposals(prepared: Path) -> None:
    split = load_split(MINI, "validation").select(range(LIMIT))
    table = load_prepared(prepared, "validation")
    assert table["id"] == split["id"]
    assert table["image_id"] == split["image_id"]
    generator = build_proposal_generator(get_preset("tiny").proposals)
    total = 0
    for sample, row in zip(split, table, strict=True):
        expected = generator(image_array(sample["image"]))
        stored = np.array([rle.decode(p) for p in row["proposals"]]).reshape(expected.masks.shape)
        assert np.array_equal(stored, expected.masks)
        assert np.array_equal(np.float32(row["scores"]), expected.scores.astype(np.float32))
        total += len(stored)
    assert total > LIMIT  # the scenes have several shapes each: the comparison was not vacuous


def test_stored_targets_equal_the_overlaps_of_the_decoded_proposals(prepared: Path) -> None:
    split = load_split(MINI, "validation").select(range(LIMIT))
    for sample, row in zip(split, load_prepared(prepared, "validation"), strict=True):
        target = np.asarray(sample["mask"].convert("L")) > 127
        ignore = np.asarray(sample["ignore"].convert("L")) > 127 if sample["ignore"] is not None else None
        proposals = np.array([rle.decode(p) for p in row["proposals"]]).reshape(-1, *target.shape)
        iou, iop = overlap_targets(proposals, target, ignore)
        assert np.array_equal(np.float32(row["iou"]), iou) and np.array_equal(np.float32(row["iop"]), iop)
        assert row["has_target"] == bool(target.any())
        # The best proposal by stored IoU, checked by plain counting.
        if len(proposals) and target.any():
            best = proposals[int(np.argmax(row["iou"]))]
            scored = ~ignore if ignore is not None else np.ones_like(target)
            counted = (best & target & scored).sum() / ((best | target) & scored).sum()
            assert max(row["iou"]) == pytest.approx(counted, abs=1e-6)


def test_worker_processes_give_the_same_file(prepared: Path, tmp_path: Path) -> None:
    prepare(get_preset("tiny"), MINI, "validation", tmp_path, limit=LIMIT, workers=2)
    assert load_prepared(tmp_path, "validation").to_list() == load_prepared(prepared, "validation").to_list()


def test_generator_runs_once_per_run_of_questions_about_one_image() -> None:
    split = load_split(MINI, "validation").select(range(2))
    first, second = split[0], split[1]
    follow_up = {**first, "id": "follow-up", "query": "another question about the same image"}
    generator = build_proposal_generator(get_preset("tiny").proposals)
    calls: list[str] = []

    def counting(image: np.ndarray):
        calls.append("call")
        return generator(image)

    rows = list(prepared_rows([first, follow_up, second], counting, desc="test"))
    assert len(calls) == 2
    assert [row["id"] for row in rows] == [first["id"], "follow-up", second["id"]]
    assert rows[0]["proposals"] == rows[1]["proposals"]


def test_cli_writes_the_prepared_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["prepare", "--preset", "tiny", "--data", MINI, "--split", "validation", "--out", str(tmp_path)]
    assert main([*arguments, "--limit", "3"]) == 0
    assert "validation.parquet" in capsys.readouterr().out
    assert len(load_prepared(tmp_path, "validation")) == 3


def test_missing_prepared_file_names_the_command_that_makes_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"train\.parquet not found: run `python -m llmseg prepare --split train"):
        load_prepared(tmp_path, "train")


@pytest.mark.parametrize(
    ("arguments", "message"), [(["--split", "training"], "training"), (["--limit", "0"], "--limit")]
)
def test_cli_errors_are_one_line(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["prepare", "--preset", "tiny", "--data", MINI, "--out", str(tmp_path)]
    if "--split" not in arguments:
        base += ["--split", "validation"]
    assert main([*base, *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and message in error, error
    assert not (tmp_path / "validation.parquet").exists()


def test_training_rejects_proposals_prepared_for_other_data(prepared: Path, tmp_path: Path) -> None:
    split = load_split(MINI, "validation")
    with pytest.raises(ValueError, match="do not match the split"):
        TrainingData(split.select(range(1, LIMIT + 1)), load_prepared(prepared, "validation"))
    # Same ids (another seed of the generator), other images: caught when a question is decoded.
    make_shapes(tmp_path / "other", train=0, validation=LIMIT, test=0, seed=5)
    other = TrainingData(load_split(str(tmp_path / "other"), "validation"), load_prepared(prepared, "validation"))
    with pytest.raises(ValueError, match="come from other data"):
        for index in range(len(other)):
            other[index]
