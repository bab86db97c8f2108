"""convert-reasonseg --hub: a miniature in the Hub layout against the same data in LISA's layout.

The Hub layout (``Ricky06662/ReasonSeg_val`` / ``_test``) stores, per image, LISA's label map cast
to bool: target and ignore region together. The miniature here is built from hand-drawn
rectangles, independently of the converter's rasteriser: LISA's layout gets the polygons, the Hub
layout gets ``target | ignore`` as a dense list of lists of bool.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from test_convert_reasonseg import H, W, filled, rectangle

from eval import References, evaluate, load_split, rle
from llmseg.data.__main__ import main
from llmseg.data.converter import BadInput
from llmseg.data.reasonseg import convert_reasonseg
from llmseg.data.reasonseg_hub import convert_reasonseg_hub

# The Hub card's features, as `Ricky06662/ReasonSeg_test` declares them.
FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "text": datasets.Value("string"),
        "mask": datasets.Sequence(datasets.Sequence(datasets.Value("bool"))),
        "image_id": datasets.Value("string"),
        "ann_id": datasets.Value("string"),
        "img_height": datasets.Value("int64"),
        "img_width": datasets.Value("int64"),
    }
)
CARD = """---
dataset_info:
  features:
  - name: image
    dtype: image
  - name: text
    dtype: string
  - name: mask
    sequence:
      sequence: bool
  - name: image_id
    dtype: string
  - name: ann_id
    dtype: string
  - name: img_height
    dtype: int64
  - name: img_width
    dtype: int64
  splits:
  - name: test
configs:
- config_name: default
  data_files:
  - split: test
    path: data/test-*
---
# ReasonSeg miniature in the Hub layout
"""


# stem -> (polygons, target, ignore): targets and ignore regions derived from the rectangles by hand.
IMAGES = {
    # An ignore hole inside a target (drawn later, being smaller).
    "a1": (
        [rectangle(1, 1, 10, 8), rectangle(3, 3, 5, 5, "ignore")],
        filled(1, 1, 10, 8) & ~filled(3, 3, 5, 5),
        filled(3, 3, 5, 5),
    ),
    # A target beside an ignore region.
    "b2": ([rectangle(0, 0, 4, 4), rectangle(9, 6, 14, 10, "ignore")], filled(0, 0, 4, 4), filled(9, 6, 14, 10)),
    # No ignore region.
    "c3": ([rectangle(6, 2, 12, 9)], filled(6, 2, 12, 9), None),
    # Nothing to segment.
    "d4": ([], np.zeros((H, W), bool), None),
}


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def hub_row(stem: str, seed: int) -> dict:
    _, target, ignore = IMAGES[stem]
    folded = target if ignore is None else target | ignore  # what the Hub layout keeps
    return {
        "image": {"bytes": jpeg(seed), "path": f"{stem}.jpg"},
        "text": f"q{stem}-0",
        "mask": folded.tolist(),
        "image_id": stem,
        "ann_id": stem,
        "img_height": H,
        "img_width": W,
    }


def write_hub(folder: Path, rows: list[dict]) -> Path:
    """A download of a Hub-layout dataset: its card and one parquet shard under data/."""
    (folder / "data").mkdir(parents=True)
    columns = {name: [row[name] for row in rows] for name in FEATURES}
    datasets.Dataset.from_dict(columns, features=FEATURES).to_parquet(folder / "data" / "test-00000-of-00001.parquet")
    (folder / "README.md").write_text(CARD)
    return folder


@pytest.fixture
def layouts(tmp_path: Path) -> tuple[Path, Path]:
    """The same four images in LISA's layout (val/) and in the Hub layout (ReasonSeg_val)."""
    lisa = tmp_path / "ReasonSeg" / "val"
    lisa.mkdir(parents=True)
    for seed, (stem, (shapes, _, _)) in enumerate(IMAGES.items()):
        (lisa / f"{stem}.jpg").write_bytes(jpeg(seed))
        annotation = {"text": [f"q{stem}-0", f"q{stem}-1"], "is_sentence": seed % 2 == 0, "shapes": shapes}
        (lisa / f"{stem}.json").write_text(json.dumps(annotation))
    hub = write_hub(tmp_path / "ReasonSeg_val", [hub_row(stem, seed) for seed, stem in enumerate(IMAGES)])
    return lisa.parent, hub


def convert_both(layouts: tuple[Path, Path], tmp_path: Path) -> tuple[datasets.Dataset, datasets.Dataset]:
    lisa, hub = layouts
    convert_reasonseg(lisa, tmp_path / "from-lisa")
    conversion = convert_reasonseg_hub(hub, tmp_path / "from-hub")
    assert conversion.rows == {"validation": 4} and conversion.skipped == []
    return load_split(tmp_path / "from-lisa", "validation"), load_split(tmp_path / "from-hub", "validation")


def test_the_conversions_agree_but_for_the_folded_ignore_regions(layouts: tuple[Path, Path], tmp_path: Path) -> None:
    original, hub = convert_both(layouts, tmp_path)
    assert hub["id"] == original["id"] == ["a1-0", "b2-0", "c3-0", "d4-0"]
    for ours, theirs in zip(original, hub, strict=True):
        for column in ("image_id", "query", "answer", "source", "height", "width"):
            assert ours[column] == theirs[column], column
        assert np.array_equal(np.asarray(ours["image"]), np.asarray(theirs["image"]))
        target = np.asarray(ours["mask"]) == 255
        ignore = np.zeros_like(target) if ours["ignore"] is None else np.asarray(ours["ignore"]) == 255
        assert np.array_equal(np.asarray(theirs["mask"]) == 255, target | ignore), ours["id"]
        assert theirs["ignore"] is None
        assert theirs["tags"] == [t for t in ours["tags"] if t not in ("long", "short")]  # no is_sentence
    assert original["ignore"][0] is not None and original["ignore"][1] is not None  # the miniature has some


def test_one_predictions_file_scores_the_same_outside_the_ignore_regions(
    layouts: tuple[Path, Path], tmp_path: Path
) -> None:
    """Per sample, with G the target, R the ignore region and the Hub's mask G | R:
    |P & (G|R) - R| = |P & G - R| and |(P | G|R) - R| = |(P | G) - R|. So the Hub conversion
    scored with the original's ignore regions put back must give the original's I and U exactly,
    sample by sample; and both are checked against I and U counted here, ignore pixels excluded.
    """
    original, hub = convert_both(layouts, tmp_path)
    # One prediction per image, touching target, ignore region and background alike.
    guess = filled(2, 2, 11, 7)
    predictions = {sample_id: rle.encode(guess) for sample_id in original["id"]}
    lisa_refs, hub_refs = References.from_split(original), References.from_split(hub)
    lisa_report = evaluate(predictions, lisa_refs, n_bootstrap=0)
    outside = evaluate(predictions, dataclasses.replace(hub_refs, ignores=lisa_refs.ignores), n_bootstrap=0)
    assert outside.per_sample["intersection"].tolist() == lisa_report.per_sample["intersection"].tolist()
    assert outside.per_sample["union"].tolist() == lisa_report.per_sample["union"].tolist()
    assert (outside.giou, outside.ciou) == (lisa_report.giou, lisa_report.ciou)
    counted = [
        (int((guess & target & ~kept).sum()), int(((guess | target) & ~kept).sum()))
        for target, kept in ((t, np.zeros((H, W), bool) if r is None else r) for _, t, r in IMAGES.values())
    ]
    assert list(zip(lisa_report.per_sample["intersection"], lisa_report.per_sample["union"], strict=True)) == counted
    # Scored as published, the Hub conversion counts the ignore pixels: the loss is real.
    as_published = evaluate(predictions, hub_refs, n_bootstrap=0)
    assert as_published.giou != lisa_report.giou
    assert as_published.per_sample["union"].tolist()[2:] == lisa_report.per_sample["union"].tolist()[2:]


def test_the_card_says_what_the_layout_lost(layouts: tuple[Path, Path], tmp_path: Path) -> None:
    convert_reasonseg_hub(layouts[1], tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "What that layout lost: the ignore regions." in card
    assert "`ignore` column is empty" in card and "is_sentence" in card


def test_split_from_the_name_or_given(layouts: tuple[Path, Path], tmp_path: Path) -> None:
    hub = layouts[1]
    renamed = hub.rename(tmp_path / "download")
    with pytest.raises(ValueError, match="cannot tell which split .*download holds .*--split validation or test"):
        convert_reasonseg_hub(renamed, tmp_path / "out")
    assert convert_reasonseg_hub(renamed, tmp_path / "out", split="test").rows == {"test": 4}
    assert load_split(tmp_path / "out", "test")["id"] == ["a1-0", "b2-0", "c3-0", "d4-0"]


def test_a_save_to_disk_copy(tmp_path: Path) -> None:
    """Seg-Zero's download script keeps the dataset with ``save_to_disk``: that folder reads too."""
    rows = [hub_row("a1", 0), hub_row("c3", 1)]
    columns = {name: [row[name] for row in rows] for name in FEATURES}
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(columns, features=FEATURES)}).save_to_disk(
        tmp_path / "ReasonSeg_test"
    )
    assert convert_reasonseg_hub(tmp_path / "ReasonSeg_test", tmp_path / "out").rows == {"test": 2}
    row = load_split(tmp_path / "out", "test")[1]
    assert row["id"] == "c3-0" and np.array_equal(np.asarray(row["mask"]) == 255, IMAGES["c3"][1])


def test_exif_rotated_image_is_stored_the_way_its_mask_lies(tmp_path: Path) -> None:
    """The Hub masks are at the size the row gives; a rotated file is stored in that orientation."""
    exif = Image.Exif()
    exif[Image.ExifTags.Base.Orientation] = 6
    buffer = io.BytesIO()
    raw = np.random.default_rng(3).integers(0, 255, (W, H, 3), dtype=np.uint8)  # stored W x H, shown H x W
    Image.fromarray(raw).save(buffer, "JPEG", exif=exif.tobytes())
    upright = hub_row("a1", 0) | {"image": {"bytes": buffer.getvalue(), "path": "a1.jpg"}}
    unrotated = hub_row("b2", 0) | {"image": {"bytes": buffer.getvalue(), "path": "b2.jpg"}}
    unrotated |= {"mask": np.ones((W, H), bool).tolist(), "img_height": W, "img_width": H}
    convert_reasonseg_hub(write_hub(tmp_path / "ReasonSeg_val", [upright, unrotated]), tmp_path / "out")
    up, flat = load_split(tmp_path / "out", "validation")
    stored = Image.open(io.BytesIO(buffer.getvalue()))
    assert np.array_equal(np.asarray(up["image"]), np.asarray(stored.transpose(Image.Transpose.ROTATE_270)))
    assert (up["height"], up["width"]) == (H, W) and (flat["height"], flat["width"]) == (W, H)
    assert np.array_equal(np.asarray(flat["image"]), np.asarray(stored.convert("RGB")))


BAD_ROWS = [
    (
        hub_row("a1", 0) | {"img_height": H + 1},
        r"row 1, image_id 'a1'\]: mask is 12x16, img_height x img_width is 13x16",
    ),
    (
        hub_row("b2", 1) | {"mask": [[True] * W] + [[False] * (W - 1)] * (H - 1)},
        r"row 1, image_id 'b2'\]: mask rows must be lists of booleans, all of one length",
    ),
    (hub_row("c3", 3), r"row 1, image_id 'c3'\]: the image_id repeats row 0"),
    (
        hub_row("d4", 4) | {"image": {"bytes": b"not a jpeg", "path": "d4.jpg"}},
        r"row 1, image_id 'd4'\]: unreadable image",
    ),
    (hub_row("d4", 4) | {"text": " "}, r"row 1, image_id 'd4'\]: text must be a non-empty query"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_a_bad_row_names_itself(row: dict, message: str, tmp_path: Path) -> None:
    folder = write_hub(tmp_path / "ReasonSeg_test", [hub_row("c3", 2), row])
    with pytest.raises(BadInput, match=message):
        convert_reasonseg_hub(folder, tmp_path / "out")
    assert not list(tmp_path.glob("out/*.parquet"))  # nothing written by a failed conversion


def test_skip_bad_converts_the_rest_and_reports(tmp_path: Path) -> None:
    folder = write_hub(tmp_path / "ReasonSeg_test", [hub_row("c3", 2)] + [row for row, _ in BAD_ROWS])
    conversion = convert_reasonseg_hub(folder, tmp_path / "out", skip_bad=True)
    assert conversion.rows == {"test": 1} and len(conversion.skipped) == len(BAD_ROWS)
    assert "the image_id repeats row 0" in conversion.summary(tmp_path / "out")
    assert load_split(tmp_path / "out", "test")["id"] == ["c3-0"]


def test_not_the_hub_layout(tmp_path: Path) -> None:
    folder = tmp_path / "ReasonSeg_test"
    folder.mkdir()
    datasets.Dataset.from_dict({"image_id": ["a"], "text": ["q"]}).to_parquet(folder / "test-00000.parquet")
    with pytest.raises(ValueError, match="not in ReasonSeg's Hub layout: it lacks the column.s. image, mask"):
        convert_reasonseg_hub(folder, tmp_path / "out")


def test_no_such_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no dataset at .*: give a folder"):
        convert_reasonseg_hub(tmp_path / "ReasonSeg_test", tmp_path / "out")
    with pytest.raises(ValueError, match="cannot reach 'someone/ReasonSeg_test' on the Hub: download it"):
        convert_reasonseg_hub("someone/ReasonSeg_test", tmp_path / "out")  # the tests run offline


def test_cli(layouts: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lisa, hub = layouts
    out, truth = str(tmp_path / "out"), str(tmp_path / "truth")
    assert (
        main(["convert-reasonseg", "--hub", str(hub), "--out", out, "--holdout", "validation", "--holdout-dir", truth])
        == 0
    )
    assert "wrote 4 validation samples" in capsys.readouterr().out
    assert load_split(out, "validation", require_ground_truth=False)["mask"] == [None] * 4
    assert load_split(truth, "validation")["id"] == ["a1-0", "b2-0", "c3-0", "d4-0"]
    assert main(["convert-reasonseg", "--hub", str(hub), "--split", "test", "--out", out]) == 0
    assert "wrote 4 test samples" in capsys.readouterr().out
    assert main(["convert-reasonseg", "--root", str(lisa), "--split", "test", "--out", out]) == 2
    assert capsys.readouterr().err == "error: --split goes with --hub: LISA's release names its splits by folder\n"
    with pytest.raises(SystemExit):
        main(["convert-reasonseg", "--root", str(lisa), "--hub", str(hub), "--out", out])
    assert "not allowed with argument" in capsys.readouterr().err
