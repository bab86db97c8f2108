"""convert-llmseg40k on a tiny release built here: ids, masks, sources, holdout, bad input, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval import load_split, rle
from llmseg.data.__main__ import main
from llmseg.data.converter import BadInput
from llmseg.data.llmseg40k import convert_llmseg40k

H, W = 10, 14


def blob(seed: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) < 0.3


def write_image(path: Path, seed: int, size: tuple[int, int] = (H, W), exif_orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if exif_orientation is not None:
        exif[Image.ExifTags.Base.Orientation] = exif_orientation
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", exif=exif.tobytes())


def pair(question: str, mask: np.ndarray, answer: str = "the answer") -> dict:
    return {"question": question, "answer": answer, "rle_seg": rle.encode(mask)}


# split -> image name -> (source, masks of its qa pairs)
RELEASE = {
    "train": {
        "000000000001.jpg": ("coco", [blob(1), blob(2)]),
        "ego_frame_7.jpg": ("ego_objects", [blob(3)]),
    },
    "validation": {"000000000002.jpg": ("coco", [np.zeros((H, W), bool), blob(4)])},
    "test": {"ego_frame_9.jpg": ("ego_objects", [blob(5), blob(6), blob(7)])},
}
FOLDERS = {"coco": "coco/train2017", "ego_objects": "ego_objects/images"}


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, Path]:
    annotations, images = tmp_path / "annotations", tmp_path / "images"
    annotations.mkdir()
    for split, entries in RELEASE.items():
        content = {}
        for n, (name, (source, masks)) in enumerate(entries.items()):
            write_image(images / FOLDERS[source] / name, seed=n)
            content[name] = {"from_dataset": source, "qa_pairs": [pair(f"{name} q{i}", m) for i, m in enumerate(masks)]}
        (annotations / f"{split}.json").write_text(json.dumps(content))
    return annotations, images


def test_converts_every_split(release: tuple[Path, Path], tmp_path: Path) -> None:
    conversion = convert_llmseg40k(*release, tmp_path / "out")
    assert conversion.rows == {"train": 3, "validation": 2, "test": 3} and conversion.skipped == []
    for split, entries in RELEASE.items():
        rows = load_split(tmp_path / "out", split)
        expected_ids = [f"{Path(name).stem}-{i}" for name, (_, masks) in entries.items() for i in range(len(masks))]
        assert rows["id"] == expected_ids
        for row in rows:
            name = next(n for n in entries if Path(n).stem == row["image_id"])
            source, masks = entries[name]
            index = int(row["id"].rsplit("-", 1)[1])
            assert np.array_equal(np.asarray(row["mask"]) == 255, masks[index])
            assert row["ignore"] is None
            assert (row["source"], row["query"], row["answer"]) == (source, f"{name} q{index}", "the answer")
            assert row["tags"] == [source] + ([] if masks[index].any() else ["no-target"])
            original = np.asarray(Image.open(release[1] / FOLDERS[source] / name).convert("RGB"))
            assert np.array_equal(np.asarray(row["image"].convert("RGB")), original)
            assert (row["height"], row["width"]) == (H, W)


def test_only_the_split_files_present(release: tuple[Path, Path], tmp_path: Path) -> None:
    (release[0] / "train.json").unlink()
    assert convert_llmseg40k(*release, tmp_path / "out").rows == {"validation": 2, "test": 3}


def test_holdout_and_same_bytes(release: tuple[Path, Path], tmp_path: Path) -> None:
    for out in ("one", "two"):
        convert_llmseg40k(*release, tmp_path / out, holdout="test", holdout_dir=tmp_path / f"{out}-truth")
    assert load_split(tmp_path / "one", "test", require_ground_truth=False)["mask"] == [None] * 3
    truth = load_split(tmp_path / "one-truth", "test")
    assert [
        np.array_equal(np.asarray(m) == 255, e)
        for m, e in zip(truth["mask"], RELEASE["test"]["ego_frame_9.jpg"][1], strict=True)
    ] == [True] * 3
    for folder in ("one", "one-truth"):
        twin = tmp_path / folder.replace("one", "two")
        names = sorted(p.name for p in (tmp_path / folder).iterdir())
        assert names == sorted(p.name for p in twin.iterdir())
        for name in names:
            assert (tmp_path / folder / name).read_bytes() == (twin / name).read_bytes(), name


def test_exif_orientation_follows_the_masks(tmp_path: Path) -> None:
    """A rotated file is stored the way its masks were drawn on it: upright or raw, decided by size."""
    annotations, images = tmp_path / "annotations", tmp_path / "images"
    annotations.mkdir()
    write_image(images / FOLDERS["coco"] / "up.jpg", seed=1, size=(W, H), exif_orientation=6)  # shown H x W
    write_image(images / FOLDERS["coco"] / "raw.jpg", seed=2, size=(W, H), exif_orientation=6)
    content = {
        "up.jpg": {"from_dataset": "coco", "qa_pairs": [pair("q", blob(1))]},  # H x W: upright
        "raw.jpg": {"from_dataset": "coco", "qa_pairs": [pair("q", blob(2, (W, H)))]},  # W x H: raw
    }
    (annotations / "validation.json").write_text(json.dumps(content))
    convert_llmseg40k(annotations, images, tmp_path / "out")
    up, raw = load_split(tmp_path / "out", "validation")
    stored = Image.open(images / FOLDERS["coco"] / "up.jpg")
    assert np.array_equal(
        np.asarray(up["image"].convert("RGB")), np.asarray(stored.transpose(Image.Transpose.ROTATE_270).convert("RGB"))
    )
    assert (up["height"], up["width"]) == (H, W) and (raw["height"], raw["width"]) == (W, H)
    raw_pixels = np.asarray(Image.open(images / FOLDERS["coco"] / "raw.jpg").convert("RGB"))
    assert np.array_equal(np.asarray(raw["image"].convert("RGB")), raw_pixels)
    assert np.array_equal(np.asarray(raw["mask"]) == 255, blob(2, (W, H)))


def break_release(annotations: Path, images: Path) -> None:
    """A qa pair whose mask is the wrong size, a missing image, and a malformed split file."""
    train = json.loads((annotations / "train.json").read_text())
    train["000000000001.jpg"]["qa_pairs"][1]["rle_seg"] = rle.encode(np.zeros((H + 1, W), bool))
    (annotations / "train.json").write_text(json.dumps(train))
    (images / FOLDERS["ego_objects"] / "ego_frame_9.jpg").unlink()
    (annotations / "validation.json").write_text('{"000000000002.jpg": {')


def test_bad_input_names_the_file(release: tuple[Path, Path], tmp_path: Path) -> None:
    annotations, images = release
    break_release(annotations, images)
    # Split files are all parsed before anything is written, so a malformed one fails first.
    with pytest.raises(BadInput, match=r"validation\.json: malformed JSON"):
        convert_llmseg40k(annotations, images, tmp_path / "out")
    (annotations / "validation.json").unlink()
    with pytest.raises(
        BadInput, match=r"train\.json \[000000000001\.jpg\] qa pair 1: mask is 11x14, the image is 10x14"
    ):
        convert_llmseg40k(annotations, images, tmp_path / "out")
    (annotations / "train.json").unlink()
    with pytest.raises(BadInput, match=r"ego_objects/images/ego_frame_9\.jpg: missing image"):
        convert_llmseg40k(annotations, images, tmp_path / "out")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"from_dataset": "coco"}, 'expected an object with a "qa_pairs" list'),
        ({"from_dataset": "flickr", "qa_pairs": []}, '"from_dataset" must be one of coco, ego_objects'),
        ({"from_dataset": "coco", "qa_pairs": [{"answer": "x"}]}, 'qa pair 0: expected an object with a "question"'),
        (
            {"from_dataset": "coco", "qa_pairs": [{"question": "q", "rle_seg": {"size": [H, W], "counts": "0"}}]},
            r'qa pair 0: bad "rle_seg" \(run lengths sum to 0, expected height\*width = 140\)',
        ),
    ],
)
def test_malformed_entries(entry: dict, message: str, release: tuple[Path, Path], tmp_path: Path) -> None:
    annotations, images = release
    (annotations / "test.json").write_text(json.dumps({"000000000001.jpg": entry}))
    with pytest.raises(BadInput, match=message):
        convert_llmseg40k(annotations, images, tmp_path / "out")


def test_skip_bad_converts_the_rest_and_reports(release: tuple[Path, Path], tmp_path: Path) -> None:
    break_release(*release)
    conversion = convert_llmseg40k(*release, tmp_path / "out", skip_bad=True)
    assert conversion.rows == {"train": 2, "test": 0}  # validation.json was unreadable
    assert len(conversion.skipped) == 3
    assert load_split(tmp_path / "out", "train")["id"] == ["000000000001-0", "ego_frame_7-0"]


def test_cli(release: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    annotations, images = release
    args = ["convert-llmseg40k", "--annotations", str(annotations), "--images-root", str(images)]
    assert (
        main([*args, "--out", str(tmp_path / "out"), "--holdout", "test", "--holdout-dir", str(tmp_path / "gt")]) == 0
    )
    assert "wrote 3 train, 2 validation, 3 test samples" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "out"), "--holdout", "test"]) == 2
    assert capsys.readouterr().err == "error: --holdout and --holdout-dir go together\n"
    break_release(annotations, images)
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "validation.json: malformed JSON" in err and len(err.splitlines()) == 1
    assert main([*args, "--out", str(tmp_path / "out"), "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 3 bad input(s):" in out and "ego_frame_9.jpg: missing image" in out
