"""The committed `shapes` mini splits load with `datasets` and are what their card's command makes."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from llmseg.data.shapes import generate_sample

ROOT = Path(__file__).resolve().parents[1]
PUBLIC, HELDOUT = ROOT / "data" / "shapes-mini", ROOT / "data" / "shapes-mini-heldout"
SEED = 0  # the seed the dataset card names


def load(folder: Path) -> datasets.DatasetDict:
    # datasets 5.2 keys a local folder's cache by the folder's name, not its content: rebuild it,
    # so a regenerated folder is never read back stale.
    return datasets.load_dataset(str(folder), download_mode="force_redownload")


@pytest.fixture(scope="module")
def public() -> datasets.DatasetDict:
    return load(PUBLIC)


@pytest.fixture(scope="module")
def heldout() -> datasets.DatasetDict:
    return load(HELDOUT)


def test_public_folder_has_scored_validation_and_maskless_test(public: datasets.DatasetDict) -> None:
    assert set(public) == {"validation", "test"}
    assert public["validation"].num_rows == public["test"].num_rows == 200
    assert public["validation"].data.column("mask").null_count == 0
    assert public["test"].data.column("mask").null_count == 200
    assert f"--seed {SEED}" in (PUBLIC / "README.md").read_text()


def test_heldout_folder_holds_the_public_test_ground_truth(
    public: datasets.DatasetDict, heldout: datasets.DatasetDict
) -> None:
    assert set(heldout) == {"test"}
    truth, test = heldout["test"], public["test"]
    assert truth.data.column("mask").null_count == 0
    assert truth["id"] == test["id"] and truth["query"] == test["query"]


@pytest.mark.parametrize(("split", "index"), [("validation", 0), ("validation", 199), ("test", 0), ("test", 123)])
def test_committed_rows_are_what_the_generator_makes(
    public: datasets.DatasetDict, heldout: datasets.DatasetDict, split: str, index: int
) -> None:
    row = (public if split == "validation" else heldout)[split][index]
    made = generate_sample(SEED, split, index).sample
    assert (row["id"], row["query"], row["answer"], row["tags"]) == (made.id, made.query, made.answer, made.tags)
    assert np.array_equal(np.asarray(row["image"]), np.asarray(Image.open(io.BytesIO(made.image))))
    assert np.array_equal(np.asarray(row["mask"]) > 0, made.mask)


def test_committed_baseline_predictions_cover_the_test_split(heldout: datasets.DatasetDict) -> None:
    from eval import evaluate, read_predictions

    truth = heldout["test"]
    files = sorted((HELDOUT / "baselines").glob("*.jsonl"))
    assert {f.stem for f in files} >= {"empty", "full-image", "random-object", "largest-object", "oracle-best-instance"}
    for path in files:
        assert set(read_predictions(path)) == set(truth["id"]), path.name
    # An empty prediction is right exactly on the questions whose ground truth is empty.
    empty_truths = sum(not np.asarray(mask).any() for mask in truth["mask"])
    assert evaluate(HELDOUT / "baselines" / "empty.jsonl", truth, n_bootstrap=0).giou == empty_truths / truth.num_rows
