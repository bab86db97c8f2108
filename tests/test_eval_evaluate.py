"""``evaluate`` end to end on dataset folders: scores, tags, the report, and the contract checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eval import PredictionsError, References, Report, evaluate, load_split, rle, write_predictions

SHAPE = (6, 8)


def box(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[rows, cols] = True
    return mask


# id, ground truth, ignore, tags; the prediction each test uses is next to its hand-counted I and U.
ROWS = [
    ("a-0", box(slice(0, 2), slice(0, 4)), None, ["short"]),  # pred rows 0-1, cols 0-1: I 4, U 8
    ("b-0", box(slice(0, 6), slice(0, 8)), box(slice(0, 3), slice(0, 8)), ["long"]),  # pred full: I 24, U 24
    ("c-0", np.zeros(SHAPE, bool), None, ["long", "no-target"]),  # pred empty: I 0, U 0
    ("d-0", box(slice(2, 4), slice(2, 4)), None, ["short"]),  # pred empty: I 0, U 4
]
PREDICTIONS = {
    "a-0": box(slice(0, 2), slice(0, 2)),
    "b-0": np.ones(SHAPE, bool),
    "c-0": np.zeros(SHAPE, bool),
    "d-0": np.zeros(SHAPE, bool),
}
EXPECTED = {"a-0": (4, 8), "b-0": (24, 24), "c-0": (0, 0), "d-0": (0, 4)}


@pytest.fixture
def folder(write_split) -> Path:
    return write_split({"validation": ROWS})


@pytest.fixture
def references(folder: Path) -> References:
    return References.from_data(str(folder), "validation")


def encoded(predictions: dict[str, np.ndarray]) -> dict[str, dict]:
    return {sample_id: rle.encode(mask) for sample_id, mask in predictions.items()}


def test_scores_per_sample_overall_and_per_tag(references: References) -> None:
    report = evaluate(encoded(PREDICTIONS), references, n_bootstrap=200)
    rows = report.per_sample.set_index("id")
    for sample_id, (intersection, union) in EXPECTED.items():
        assert (rows.loc[sample_id, "intersection"], rows.loc[sample_id, "union"]) == (intersection, union)
    assert report.n == 4
    assert report.giou == pytest.approx((0.5 + 1.0 + 1.0 + 0.0) / 4)
    assert report.ciou == pytest.approx(28 / 36)
    assert set(report.by_tag) == {"short", "long", "no-target"}
    assert report.by_tag["short"]["n"] == 2
    assert report.by_tag["short"]["giou"] == pytest.approx(0.25)
    assert report.by_tag["short"]["ciou"] == pytest.approx(4 / 12)
    assert report.by_tag["long"]["giou"] == pytest.approx(1.0)
    assert report.by_tag["no-target"]["ciou"] == 1.0  # every sample empty on both sides
    assert report.nciou is None
    low, high = report.ci95["giou"]
    assert low <= report.giou <= high


def test_perfect_predictions_score_one_and_ncIoU(references: References, folder: Path) -> None:
    dataset = load_split(folder, "validation")
    perfect = {row["id"]: rle.encode(np.asarray(row["mask"]) > 0) for row in dataset}
    report = evaluate(perfect, dataset, nciou=True, n_bootstrap=0)
    assert (report.giou, report.ciou, report.nciou) == (1.0, 1.0, 1.0)
    assert report.ci95 == {"giou": None, "ciou": None}


def test_references_match_the_stored_masks_pixel_for_pixel(references: References) -> None:
    assert references.ids == [row[0] for row in ROWS]
    assert references.sizes == [SHAPE] * 4
    assert references.tags == [row[3] for row in ROWS]
    for (_, mask, ignore, _), gt, gt_ignore in zip(ROWS, references.masks, references.ignores, strict=True):
        assert np.array_equal(rle.decode(gt), mask)
        assert (gt_ignore is None) == (ignore is None)
        if ignore is not None:
            assert np.array_equal(rle.decode(gt_ignore), ignore)


def test_same_seed_same_report_and_reusable_references(references: References) -> None:
    first = evaluate(encoded(PREDICTIONS), references, n_bootstrap=100, seed=5)
    again = evaluate(encoded(PREDICTIONS), references, n_bootstrap=100, seed=5)
    assert first.to_dict() == again.to_dict()
    other = evaluate(encoded({**PREDICTIONS, "d-0": ROWS[3][1]}), references, n_bootstrap=0)
    assert other.giou == pytest.approx((0.5 + 1.0 + 1.0 + 1.0) / 4)


def test_from_a_file_path_and_bytes(references: References, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    write_predictions(path, PREDICTIONS.items())
    from_path = evaluate(path, references, n_bootstrap=0)
    assert from_path.to_dict() == evaluate(path.read_bytes(), references, n_bootstrap=0).to_dict()
    assert from_path.giou == pytest.approx(0.625)


def test_report_dict_table_and_csv(references: References, tmp_path: Path) -> None:
    report = evaluate(encoded(PREDICTIONS), references, nciou=True, n_bootstrap=50)
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert {"giou", "ciou", "n", "nciou", "by_tag", "ci95"} <= set(as_dict)
    assert set(as_dict["by_tag"]["long"]) == {"giou", "ciou", "n", "ci95"}
    table = report.to_table()
    assert "overall" in table and "no-target" in table and "62.50" in table and "ncIoU" in table
    csv = tmp_path / "rows.csv"
    report.write_per_sample_csv(csv)
    rows = pd.read_csv(csv)
    assert list(rows.columns) == ["id", "intersection", "union", "iou", "tags"]
    assert rows.loc[rows["id"] == "c-0", "tags"].item() == "long,no-target"
    assert rows["iou"].tolist() == [0.5, 1.0, 1.0, 0.0]
    assert isinstance(report, Report)


def test_unknown_ids_are_named(references: References) -> None:
    with pytest.raises(PredictionsError, match=r"id\(s\) 'zz-9' are not in the split"):
        evaluate({**encoded(PREDICTIONS), "zz-9": rle.encode(np.zeros(SHAPE))}, references)
    with pytest.raises(PredictionsError, match="is it the right split"):
        evaluate({"x": rle.encode(np.zeros(SHAPE))}, references)


def test_missing_ids_are_named(references: References) -> None:
    partial = {k: v for k, v in encoded(PREDICTIONS).items() if k not in ("b-0", "d-0")}
    with pytest.raises(PredictionsError, match=r"id\(s\) 'b-0', 'd-0' have no prediction"):
        evaluate(partial, references)


def test_size_mismatch_is_named(references: References) -> None:
    wrong = {**encoded(PREDICTIONS), "c-0": rle.encode(np.zeros((8, 6), bool))}
    with pytest.raises(PredictionsError, match=r"'c-0' is not at the image's size \('c-0': 8x6, image 6x8"):
        evaluate(wrong, references)


def test_undecodable_mask_in_a_mapping_is_named(references: References) -> None:
    broken = {**encoded(PREDICTIONS), "a-0": {"size": list(SHAPE), "counts": "0"}}
    with pytest.raises(PredictionsError, match="'a-0' is not valid RLE"):
        evaluate(broken, references)


def test_public_holdout_copy_is_rejected_and_ground_truth_scores(write_split, tmp_path: Path) -> None:
    public = write_split({"validation": ROWS[:2], "test": ROWS}, holdout="test", holdout_dir=tmp_path / "gt")
    with pytest.raises(ValueError, match="public copy of a held-out split"):
        References.from_data(str(public), "test")
    # The public copy has every other column, and its mask column is all null.
    test = load_split(public, "test", require_ground_truth=False)
    assert test["id"] == [row[0] for row in ROWS] and set(test["mask"]) == {None}
    report = evaluate(encoded(PREDICTIONS), References.from_data(str(tmp_path / "gt"), "test"), n_bootstrap=0)
    assert report.giou == pytest.approx(0.625)


def test_bad_arguments() -> None:
    one = References(
        ids=["a"], sizes=[SHAPE], tags=[[]], masks=[rle.to_pycoco(rle.encode(np.eye(6, 8)))], ignores=[None]
    )
    with pytest.raises(ValueError, match="n_bootstrap"):
        evaluate({"a": rle.encode(np.eye(6, 8))}, one, n_bootstrap=-1)
    with pytest.raises(ValueError, match="unique"):
        References(ids=["a", "a"], sizes=[SHAPE] * 2, tags=[[]] * 2, masks=one.masks * 2, ignores=[None] * 2)
    with pytest.raises(ValueError, match="no split 'train'|no dataset"):
        References.from_data("/nonexistent/folder", "train")


def test_a_rewritten_folder_is_read_afresh(write_split) -> None:
    """``load_dataset(folder)`` alone would return the first version's rows from its cache."""
    first = write_split({"validation": ROWS[:2]}, name="same")
    assert load_split(first, "validation")["id"] == ["a-0", "b-0"]
    write_split({"validation": ROWS[2:]}, name="same")
    assert load_split(first, "validation")["id"] == ["c-0", "d-0"]


def test_a_mask_replaced_after_reading_is_checked_again(references: References, tmp_path: Path) -> None:
    """``read_predictions`` remembers what it checked; a mask put in afterwards is not waved through."""
    from eval import read_predictions

    path = tmp_path / "p.jsonl"
    write_predictions(path, PREDICTIONS.items())
    predictions = read_predictions(path)
    assert evaluate(predictions, references, n_bootstrap=0).giou == pytest.approx(0.625)

    predictions["a-0"] = {"size": list(SHAPE), "counts": rle.encode(box(slice(0, 2), slice(0, 4)))["counts"] + "1"}
    with pytest.raises(PredictionsError, match="'a-0' is not valid RLE"):
        evaluate(predictions, references, n_bootstrap=0)
    predictions["a-0"] = rle.encode(box(slice(0, 2), slice(0, 4)))  # now the ground truth itself: IoU 1
    assert evaluate(predictions, references, n_bootstrap=0).giou == pytest.approx(0.75)
    del predictions["d-0"]
    with pytest.raises(PredictionsError, match="'d-0' have no prediction"):
        evaluate(predictions, references, n_bootstrap=0)


def test_a_file_in_another_order_with_a_replaced_mask_scores_as_the_plain_mapping(
    references: References, tmp_path: Path
) -> None:
    """The areas remembered from reading follow their ids when the file's order is not the split's, and a
    replaced mask's area is measured afresh."""
    from eval import read_predictions

    path = tmp_path / "p.jsonl"
    write_predictions(path, reversed(PREDICTIONS.items()))
    predictions = read_predictions(path)
    replaced = {**encoded(PREDICTIONS), "d-0": rle.encode(box(slice(2, 4), slice(2, 3)))}
    predictions["d-0"] = replaced["d-0"]
    got = evaluate(predictions, references, n_bootstrap=0).per_sample
    expected = evaluate(replaced, references, n_bootstrap=0).per_sample
    pd.testing.assert_frame_equal(got, expected)
    assert got.set_index("id").loc["d-0", "intersection"] == 2


def test_per_tag_scores_equal_a_subset_scored_alone() -> None:
    """Each tag's scores are those of its samples alone; a tag repeated on a sample counts that sample once."""
    rng = np.random.default_rng(3)
    n = 300
    union = rng.integers(0, 50, n)
    intersection = np.minimum(union, rng.integers(0, 50, n))
    names = ["x", "y", "z", "w"]
    tags = [[names[k] for k in rng.integers(0, 4, rng.integers(0, 4))] for _ in range(n)]
    report = Report.from_counts([f"s{i}" for i in range(n)], intersection, union, tags, n_bootstrap=0)
    assert sorted(report.by_tag) == sorted({t for sample_tags in tags for t in sample_tags})
    assert any(len(set(t)) < len(t) for t in tags)
    for tag, scores in report.by_tag.items():
        rows = np.array([tag in sample_tags for sample_tags in tags])
        kept = int(rows.sum())
        alone = Report.from_counts(["-"] * kept, intersection[rows], union[rows], [[]] * kept, n_bootstrap=0)
        assert (scores["giou"], scores["ciou"], scores["n"]) == (alone.giou, alone.ciou, alone.n)
