"""convert-reasonseg on a tiny release built here: rasterisation, splits, holdout, bad input, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval import load_split
from llmseg.data.__main__ import main
from llmseg.data.converter import BadInput
from llmseg.data.reasonseg import convert_reasonseg

H, W = 12, 16


def rectangle(x0: float, y0: float, x1: float, y1: float, label: str = "target") -> dict:
    return {"label": label, "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "shape_type": "polygon"}


def filled(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """What a rectangle's outline plus fill covers: both corners inclusive."""
    mask = np.zeros((H, W), dtype=bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask


def write_image(path: Path, seed: int, exif_orientation: int | None = None, size: tuple[int, int] = (H, W)) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    if exif_orientation is not None:
        exif[Image.ExifTags.Base.Orientation] = exif_orientation
    image.save(path, format="JPEG", exif=exif.tobytes())


def annotate(folder: Path, stem: str, shapes: list[dict], queries: list[str], is_sentence: bool, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / f"{stem}.jpg", seed)
    (folder / f"{stem}.json").write_text(json.dumps({"text": queries, "is_sentence": is_sentence, "shapes": shapes}))


# Expected target and ignore masks, derived from the rectangles by hand.
EXPECTED = {
    # A target with an ignore hole drawn on top (smaller, so drawn later), and a "Flag" covering all.
    "a1": (
        filled(1, 1, 10, 8) & ~filled(3, 3, 5, 5),
        filled(3, 3, 5, 5),
        [rectangle(0, 0, 15, 11, "Flag"), rectangle(1, 1, 10, 8), rectangle(3, 3, 5, 5, "ignore")],
    ),
    # Float points truncate toward zero: (2.9, 1.2)-(6.7, 4.99) fills (2, 1)-(6, 4).
    "b2": (filled(2, 1, 6, 4), None, [rectangle(2.9, 1.2, 6.7, 4.99)]),
    # A small target inside a large ignore region stays a target.
    "c3": (
        filled(6, 6, 7, 7),
        filled(4, 4, 12, 10) & ~filled(6, 6, 7, 7),
        [
            rectangle(6, 6, 7, 7),
            rectangle(4, 4, 12, 10, "region_ignore"),
        ],
    ),
    # No polygon at all: empty ground truth, kept.
    "d4": (np.zeros((H, W), bool), None, []),
}


FOLDERS = {"a1": "train", "b2": "train", "c3": "val", "d4": "test"}


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "ReasonSeg"
    for n, (stem, (_, _, shapes)) in enumerate(EXPECTED.items()):
        annotate(root / FOLDERS[stem], stem, shapes, [f"q{stem}-0", f"q{stem}-1"], is_sentence=n % 2 == 0, seed=n)
    return root


def test_converts_every_split_with_lisa_rasterisation(release: Path, tmp_path: Path) -> None:
    conversion = convert_reasonseg(release, tmp_path / "out")
    assert conversion.rows == {"train": 4, "validation": 1, "test": 1} and conversion.skipped == []
    train = load_split(tmp_path / "out", "train")
    assert train["id"] == ["a1-0", "a1-1", "b2-0", "b2-1"]  # every query of a train image
    assert train["query"] == ["qa1-0", "qa1-1", "qb2-0", "qb2-1"]
    validation = load_split(tmp_path / "out", "validation")
    test = load_split(tmp_path / "out", "test")
    assert validation["id"] == ["c3-0"] and test["id"] == ["d4-0"]  # the first query only
    for split in (train, validation, test):
        for row in split:
            stem = row["image_id"]
            mask, ignore, _ = EXPECTED[stem]
            assert np.array_equal(np.asarray(row["mask"]) == 255, mask), row["id"]
            assert set(np.unique(np.asarray(row["mask"]))) <= {0, 255}
            if ignore is None:
                assert row["ignore"] is None
            else:
                assert np.array_equal(np.asarray(row["ignore"]) == 255, ignore), row["id"]
            original = np.asarray(Image.open(release / FOLDERS[stem] / f"{stem}.jpg").convert("RGB"))
            assert np.array_equal(np.asarray(row["image"].convert("RGB")), original)
            assert (row["height"], row["width"], row["source"], row["answer"]) == (H, W, "reasonseg", "")
    assert train["tags"][0] == ["long"] and train["tags"][2] == ["short"]
    assert test["tags"] == [["short", "no-target"]]


def test_holdout_keeps_the_ground_truth_apart(release: Path, tmp_path: Path) -> None:
    convert_reasonseg(release, tmp_path / "public", holdout="test", holdout_dir=tmp_path / "truth")
    public = load_split(tmp_path / "public", "test", require_ground_truth=False)
    assert public["id"] == ["d4-0"] and public["mask"] == [None] and public["ignore"] == [None]
    with pytest.raises(ValueError, match="public copy"):
        load_split(tmp_path / "public", "test")
    truth = load_split(tmp_path / "truth", "test")
    assert truth["id"] == ["d4-0"] and not np.asarray(truth[0]["mask"]).any()
    assert not (tmp_path / "truth" / "validation-00000.parquet").exists()
    assert load_split(tmp_path / "public", "validation")["ignore"][0] is not None


def test_same_input_same_bytes(release: Path, tmp_path: Path) -> None:
    convert_reasonseg(release, tmp_path / "one")
    convert_reasonseg(release, tmp_path / "two")
    convert_reasonseg(release, tmp_path / "one")  # over its own output
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "two").iterdir()) and "README.md" in files
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_exif_rotated_image_is_stored_upright(tmp_path: Path) -> None:
    """LISA reads images with OpenCV, which turns them upright: the polygons are drawn upright."""
    folder = tmp_path / "root" / "val"
    folder.mkdir(parents=True)
    write_image(folder / "r.jpg", seed=7, exif_orientation=6, size=(W, H))  # stored 16x12, shown 12x16
    (folder / "r.json").write_text(
        json.dumps({"text": ["q"], "is_sentence": False, "shapes": [rectangle(1, 1, 10, 8)]})
    )
    convert_reasonseg(tmp_path / "root", tmp_path / "out")
    row = load_split(tmp_path / "out", "validation")[0]
    upright = np.asarray(Image.open(folder / "r.jpg").transpose(Image.Transpose.ROTATE_270).convert("RGB"))
    assert upright.shape[:2] == (H, W) and (row["height"], row["width"]) == (H, W)
    assert np.array_equal(np.asarray(row["image"].convert("RGB")), upright)
    assert np.array_equal(np.asarray(row["mask"]) == 255, filled(1, 1, 10, 8))


def break_release(root: Path) -> None:
    (root / "train" / "b2.json").write_text('{"text": ["q"], "is_sentence": tru')
    (root / "test" / "d4.jpg").unlink()


def test_bad_input_names_the_file(release: Path, tmp_path: Path) -> None:
    (release / "test" / "d4.jpg").unlink()
    with pytest.raises(BadInput, match=r"test/d4\.jpg: missing image"):
        convert_reasonseg(release, tmp_path / "out")
    (release / "train" / "b2.json").write_text('{"text": ["q"], "is_sentence": tru')
    with pytest.raises(BadInput, match=r"train/b2\.json: malformed JSON"):
        convert_reasonseg(release, tmp_path / "out")
    (release / "train" / "b2.json").write_text(json.dumps({"text": [], "is_sentence": True, "shapes": []}))
    with pytest.raises(BadInput, match=r"b2\.json: \"text\" must be a non-empty list"):
        convert_reasonseg(release, tmp_path / "out")
    (release / "train" / "b2.json").write_text(json.dumps({"text": ["q"], "is_sentence": True, "shapes": [{}]}))
    with pytest.raises(BadInput, match=r"b2\.json: shape 0 needs a \"label\""):
        convert_reasonseg(release, tmp_path / "out")
    (release / "train" / "a1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BadInput, match=r"a1\.jpg: unreadable image"):
        convert_reasonseg(release, tmp_path / "out")


def test_skip_bad_converts_the_rest_and_reports(release: Path, tmp_path: Path) -> None:
    break_release(release)
    conversion = convert_reasonseg(release, tmp_path / "out", skip_bad=True)
    assert conversion.rows == {"train": 2, "validation": 1, "test": 0}
    assert len(conversion.skipped) == 2
    assert "b2.json: malformed JSON" in conversion.skipped[0] and "d4.jpg: missing image" in conversion.skipped[1]
    assert "skipped 2 bad input(s)" in conversion.summary(tmp_path / "out")
    assert load_split(tmp_path / "out", "train")["id"] == ["a1-0", "a1-1"]


def test_cli(release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["convert-reasonseg", "--root", str(release), "--out", str(out)]) == 0
    assert "wrote 4 train, 1 validation, 1 test samples" in capsys.readouterr().out
    break_release(release)
    assert main(["convert-reasonseg", "--root", str(release), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "b2.json: malformed JSON" in err and len(err.splitlines()) == 1
    assert main(["convert-reasonseg", "--root", str(release), "--out", str(out), "--skip-bad"]) == 0
    assert "d4.jpg: missing image" in capsys.readouterr().out
    assert main(["convert-reasonseg", "--root", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no train, val, test folder" in capsys.readouterr().err
