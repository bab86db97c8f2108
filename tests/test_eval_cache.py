"""The ground-truth cache: a restart decodes no PNG, a bad cache file is rebuilt, a changed split misses.

The leaderboard keeps the cache beside its database; ``python -m eval`` in a user cache folder.
Decoding is made to fail (``eval.groundtruth.decode_png`` monkeypatched) wherever a test claims
that nothing is decoded, so a silent decode would fail the test instead of passing it slowly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_leaderboard_support import make_masks, predictions_file, shifted, write_split

from eval import References, evaluate, groundtruth, read_predictions
from eval import __main__ as cli
from eval.cache import GroundTruthCache
from leaderboard import Leaderboard

pytest_plugins = ["test_leaderboard_support"]  # the split, settings and board fixtures


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> np.ndarray:
        raise AssertionError("a PNG mask was decoded")

    monkeypatch.setattr(groundtruth, "decode_png", refuse)


def _table(board: Leaderboard) -> list[dict]:
    return board.table(show_all=True, markdown=False).to_dict("records")


def _cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet"))


def test_a_restarted_leaderboard_decodes_no_png_and_scores_the_same(lb_settings, truth, tmp_path, monkeypatch):
    board = Leaderboard(lb_settings)
    first = board.submit(predictions_file(tmp_path / "a.jsonl", shifted(truth, 1)), model_name="m", user="alice")
    before = _table(board)
    assert len(_cache_files(lb_settings.ground_truth_dir)) == 1

    _no_decoding(monkeypatch)
    restarted = Leaderboard(lb_settings)
    assert _table(restarted) == before
    again = restarted.submit(predictions_file(tmp_path / "b.jsonl", shifted(truth, 1)), model_name="m", user="bob")
    assert (again.giou, again.ciou, again.ci95, again.by_tag) == (first.giou, first.ciou, first.ci95, first.by_tag)


@pytest.mark.parametrize("damage", ["truncated", "edited rle", "garbage", "empty"])
def test_a_damaged_cache_is_rebuilt_and_scores_the_same(lb_settings, truth, tmp_path, damage):
    path = predictions_file(tmp_path / "p.jsonl", shifted(truth, 2))
    board = Leaderboard(lb_settings)
    scored = board.submit(path, model_name="m", user="alice")
    (cache_file,) = _cache_files(lb_settings.ground_truth_dir)
    intact = cache_file.read_bytes()
    if damage == "truncated":
        cache_file.write_bytes(intact[: len(intact) // 2])
    elif damage == "edited rle":  # a readable file whose content no longer matches its checksum
        table = pq.read_table(cache_file)
        masks = table.column("mask").to_pylist()
        masks[0] = masks[-1]
        pq.write_table(table.set_column(1, "mask", pa.array(masks, pa.binary())), cache_file)
    elif damage == "garbage":
        cache_file.write_bytes(b"PAR1 not really parquet PAR1")
    else:
        cache_file.write_bytes(b"")

    restarted = Leaderboard(lb_settings)
    assert cache_file.read_bytes() == intact  # rebuilt (the same RLE, so the same bytes)
    assert _table(restarted) == _table(board)
    rescored = restarted.submit(path, model_name="m", user="bob")
    assert (rescored.giou, rescored.ciou, rescored.ci95) == (scored.giou, scored.ciou, scored.ci95)


def test_a_cache_file_of_other_samples_under_the_right_name_is_not_trusted(split_dir, tmp_path, monkeypatch):
    fresh = References.from_data(split_dir, "test", cache_dir=tmp_path)
    counts = [coco["counts"] for coco in fresh.masks]
    # A well-formed file with a matching checksum, for the samples in another order.
    GroundTruthCache(tmp_path).save(fresh.fingerprint, fresh.ids[::-1], counts[::-1], [None] * len(fresh))
    rebuilt = References.from_data(split_dir, "test", cache_dir=tmp_path)
    assert rebuilt.masks == fresh.masks
    assert rebuilt.ignores == fresh.ignores

    _no_decoding(monkeypatch)  # and the rewritten file is trusted again
    assert References.from_data(split_dir, "test", cache_dir=tmp_path).masks == fresh.masks


def test_a_changed_split_misses_and_both_splits_share_the_folder(tmp_path):
    truth = make_masks(seed=1)
    first = References.from_data(write_split(tmp_path, truth, name="one"), "test", cache_dir=tmp_path / "cache")
    changed = dict(truth, q001=~truth["q001"])
    second = References.from_data(write_split(tmp_path, changed, name="two"), "test", cache_dir=tmp_path / "cache")
    assert first.fingerprint != second.fingerprint
    assert {p.stem for p in _cache_files(tmp_path / "cache")} == {first.fingerprint, second.fingerprint}
    assert second.masks[1] != first.masks[1] and second.masks[2] == first.masks[2]


def test_the_fingerprint_reads_the_same_values_through_datasets_and_pyarrow(split_dir):
    from eval import load_split

    dataset = load_split(split_dir, "test")
    through_datasets = References.from_split(dataset)
    through_pyarrow = References.from_data(split_dir, "test")
    assert through_datasets.fingerprint == through_pyarrow.fingerprint
    assert through_datasets.masks == through_pyarrow.masks


def test_the_cli_caches_in_the_user_folder_and_a_warm_run_decodes_nothing(
    split_dir, truth, tmp_path, monkeypatch, capsys
):
    path = predictions_file(tmp_path / "p.jsonl", shifted(truth, 1))
    monkeypatch.setenv("LLMSEG_EVAL_CACHE", str(tmp_path / "user-cache"))
    argv = [str(path), "--data", str(split_dir), "--split", "test", "--json", "--bootstrap", "1000"]
    assert cli.main(argv) == 0
    cold = json.loads(capsys.readouterr().out)
    assert len(_cache_files(tmp_path / "user-cache")) == 1
    expected = evaluate(read_predictions(path), References.from_data(split_dir, "test"), n_bootstrap=1000)
    assert cold == json.loads(json.dumps(expected.to_dict()))

    _no_decoding(monkeypatch)
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out) == cold
    with pytest.raises(AssertionError, match="decoded"):  # without the cache it has to decode
        cli.main([*argv, "--no-cache"])


def test_the_cli_cache_folder_can_be_overridden(split_dir, truth, tmp_path, monkeypatch, capsys):
    path = predictions_file(tmp_path / "p.jsonl", truth)
    monkeypatch.setenv("LLMSEG_EVAL_CACHE", str(tmp_path / "user-cache"))
    argv = [str(path), "--data", str(split_dir), "--split", "test", "--json", "--bootstrap", "0"]
    assert cli.main([*argv, "--cache-dir", str(tmp_path / "elsewhere")]) == 0
    assert json.loads(capsys.readouterr().out)["giou"] == 1.0
    assert len(_cache_files(tmp_path / "elsewhere")) == 1
    assert not (tmp_path / "user-cache").exists()
    assert cli.main([*argv, "--no-cache"]) == 0
    assert not (tmp_path / "user-cache").exists()


def test_the_cli_computes_intervals_only_when_asked(split_dir, truth, tmp_path, capsys):
    path = predictions_file(tmp_path / "p.jsonl", shifted(truth, 1))
    assert cli.main([str(path), "--data", str(split_dir), "--split", "test", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["ci95"] == {"giou": None, "ciou": None}
    assert cli.main([str(path), "--data", str(split_dir), "--split", "test", "--json", "--bootstrap", "200"]) == 0
    asked = json.loads(capsys.readouterr().out)
    assert asked["ci95"]["giou"][0] <= asked["giou"] <= asked["ci95"]["giou"][1]
    assert {k: v for k, v in asked.items() if k not in ("ci95", "by_tag")} == {
        k: v for k, v in plain.items() if k not in ("ci95", "by_tag")
    }


def _fingerprint_cell_by_cell(table: pa.Table) -> str:
    """The fingerprint as its docstring defines it, one Python value at a time (the reference)."""
    import hashlib

    digest = hashlib.sha256()
    for name in groundtruth.SCORING_COLUMNS:
        if name not in table.column_names:
            continue
        column = table.column(name)
        if pa.types.is_struct(column.type):
            values = [b"None" if cell is None else cell for cell in groundtruth.png_bytes(column)]
        else:
            values = [repr(value).encode() for value in column.to_pylist()]
        digest.update(name.encode())
        digest.update(np.array([len(v) for v in values], dtype=np.int64).tobytes())
        digest.update(b"".join(values))
    return digest.hexdigest()


def test_the_fingerprint_read_off_arrow_buffers_equals_the_cell_by_cell_digest(tmp_path):
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    on_disk = tmp_path / "mask.png"
    on_disk.write_bytes(b"\x89PNG stored as a file")

    def table(masks: list, ignores: list) -> pa.Table:
        n = len(masks)
        return pa.table(
            {
                "id": [f"q{i}" for i in range(n)],
                "mask": pa.array(masks, image),
                "ignore": pa.array(ignores, image),
                "tags": [["long"] if i % 2 else [] for i in range(n)],
                "height": pa.array([4] * n, pa.int32()),
                "width": pa.array([5 + i for i in range(n)], pa.int32()),
            }
        )

    cell = [{"bytes": bytes([i]) * (i + 1), "path": None} for i in range(6)]
    whole = table(cell, [None, cell[1], None, None, {"bytes": b"", "path": None}, cell[5]])
    # several chunks, one of them a slice (an Arrow offset), as concatenated shards give
    chunked = pa.concat_tables([whole.slice(0, 2), whole.slice(2, 3), whole.slice(5)])
    with_path = table(cell[:2] + [{"bytes": None, "path": str(on_disk)}], [None, None, {"bytes": None, "path": None}])
    for case in (whole, chunked, whole.slice(1, 4), with_path, table([], [])):
        assert groundtruth.fingerprint(case) == _fingerprint_cell_by_cell(case)
    assert groundtruth.fingerprint(chunked) == groundtruth.fingerprint(whole)


def test_binary_layout_gives_each_cells_length_and_the_bytes_back_to_back():
    values = [b"ab", None, b"", b"cde", None, b"f"]
    column = pa.chunked_array([pa.array(values[:3], pa.binary()), pa.array(values, pa.binary()).slice(3)])
    lengths, pieces = groundtruth.binary_layout(column)
    assert lengths.tolist() == [2, -1, 0, 3, -1, 1]
    assert b"".join(bytes(piece) for piece in pieces) == b"abcdef"
    assert groundtruth.binary_layout(pa.chunked_array([pa.array([1, 2])])) is None
