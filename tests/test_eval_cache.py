"""The ground-truth cache: a restart decodes no PNG, a bad cache file is rebuilt, a changed split misses.

The leaderboard keeps the cache beside its database; ``python -m eval`` in a user cache folder.
Decoding is made to fail (``eval.groundtruth.decode_png`` monkeypatched) wherever a test claims
that nothing is decoded, so a silent decode would fail the test instead of passing it slowly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from test_leaderboard_support import make_masks, predictions_file, shifted, write_split

from eval import References, evaluate, groundtruth, read_predictions, rle
from eval import __main__ as cli
from eval import cache as cache_module
from eval.cache import CachedSplit, GroundTruthCache
from leaderboard import Leaderboard

pytest_plugins = ["test_leaderboard_support"]  # the split, settings and board fixtures


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> np.ndarray:
        raise AssertionError("a PNG mask was decoded")

    monkeypatch.setattr(groundtruth, "decode_png", refuse)


def _table(board: Leaderboard) -> list[dict]:
    return board.table(show_all=True, markdown=False).to_dict("records")


def _cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.rle"))


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
        cache_file.write_bytes(intact[:-1] + bytes([intact[-1] ^ 1]))
    elif damage == "garbage":
        cache_file.write_bytes(intact[:30] + b"not really a cache file")
    else:
        cache_file.write_bytes(b"")

    restarted = Leaderboard(lb_settings)
    assert cache_file.read_bytes() == intact  # rebuilt (the same RLE, so the same bytes)
    assert _table(restarted) == _table(board)
    rescored = restarted.submit(path, model_name="m", user="bob")
    assert (rescored.giou, rescored.ciou, rescored.ci95) == (scored.giou, scored.ciou, scored.ci95)


@pytest.mark.parametrize("stat_recorded", [True, False])
def test_a_cache_file_of_other_samples_under_the_right_name_is_not_trusted(
    split_dir, tmp_path, monkeypatch, stat_recorded
):
    # With the split's stat recorded, the record's payload checksum is what catches the rewritten file.
    monkeypatch.setattr(cache_module, "RACY_SECONDS", 0.0 if stat_recorded else 1e12)
    fresh = References.from_data(split_dir, "test", cache_dir=tmp_path)
    assert len(_stat_records(tmp_path)) == int(stat_recorded)
    counts = [coco["counts"] for coco in fresh.masks]
    # A well-formed file with a matching checksum, for the samples in another order.
    n = len(fresh)
    reordered = CachedSplit(fresh.ids[::-1], fresh.sizes[::-1], fresh.tags[::-1], counts[::-1], [None] * n, np.zeros(n))
    GroundTruthCache(tmp_path).save(fresh.fingerprint, reordered)
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


def _stat_records(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.split.json"))


def _no_parquet_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the split's parquet was read")

    for name in ("read_shards", "read_scoring_columns", "fingerprint"):
        monkeypatch.setattr(groundtruth, name, refuse)


def test_an_unchanged_folder_is_scored_without_reading_its_parquet(truth, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "RACY_SECONDS", 0.0)
    folder = write_split(tmp_path, truth)
    path = predictions_file(tmp_path / "p.jsonl", shifted(truth, 1))
    cold = References.from_data(folder, "test", cache_dir=tmp_path / "cache")
    assert len(_stat_records(tmp_path / "cache")) == 1

    _no_decoding(monkeypatch)
    _no_parquet_reading(monkeypatch)
    warm = References.from_data(folder, "test", cache_dir=tmp_path / "cache")
    assert (warm.ids, warm.sizes, warm.tags, warm.masks, warm.ignores) == (
        cold.ids,
        cold.sizes,
        cold.tags,
        cold.masks,
        cold.ignores,
    )
    assert warm.fingerprint == cold.fingerprint
    assert warm.mask_areas.tolist() == rle.areas(warm.masks).tolist()  # the cached areas are the masks'
    measured = dataclasses.replace(warm, mask_areas=None)  # scored without them: areas measured again
    expected = evaluate(read_predictions(path), measured, n_bootstrap=100)
    assert evaluate(read_predictions(path), warm, n_bootstrap=100).to_dict() == expected.to_dict()


def test_a_rewritten_shard_or_a_new_one_is_noticed_by_its_stat(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "RACY_SECONDS", 0.0)
    truth = make_masks(seed=2)
    folder = write_split(tmp_path, truth, name="split")
    first = References.from_data(folder, "test", cache_dir=tmp_path / "cache")
    changed = dict(truth, q001=~truth["q001"])
    write_split(tmp_path, changed, name="split")  # the same paths, new content
    second = References.from_data(folder, "test", cache_dir=tmp_path / "cache")
    assert second.fingerprint != first.fingerprint
    assert second.masks[1] != first.masks[1] and second.masks[2] == first.masks[2]
    assert References.from_data(folder, "test", cache_dir=tmp_path / "cache").masks == second.masks

    (shard,) = folder.glob("test-*.parquet")
    extra = shard.with_name(shard.name.replace("00000", "00001"))
    extra.write_bytes(shard.read_bytes())  # the card's pattern now matches a second shard
    if groundtruth.card_shards(folder, "test") == [str(shard)]:
        pytest.skip("the writer's card names its shard exactly")
    with pytest.raises(ValueError, match="repeats id"):
        References.from_data(folder, "test", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("damage", ["garbage", "other fingerprint", "empty"])
def test_a_damaged_stat_record_is_ignored_and_replaced(truth, tmp_path, monkeypatch, damage):
    monkeypatch.setattr(cache_module, "RACY_SECONDS", 0.0)
    folder = write_split(tmp_path, truth)
    fresh = References.from_data(folder, "test", cache_dir=tmp_path / "cache")
    other = References.from_data(write_split(tmp_path, make_masks(seed=3)), "test", cache_dir=tmp_path / "cache")
    record = next(p for p in _stat_records(tmp_path / "cache") if fresh.fingerprint in p.read_text())
    intact = record.read_text()
    if damage == "garbage":
        record.write_text(intact[: len(intact) // 2])
    elif damage == "other fingerprint":  # points at another split's (valid) cache file, checksum left stale
        record.write_text(intact.replace(fresh.fingerprint, other.fingerprint))
    else:
        record.write_text("")
    again = References.from_data(folder, "test", cache_dir=tmp_path / "cache")
    assert again.fingerprint == fresh.fingerprint and again.masks == fresh.masks
    assert json.loads(record.read_text())["fingerprint"] == fresh.fingerprint


def test_files_changed_just_now_are_not_remembered(truth, tmp_path, monkeypatch):
    # A window far wider than any run, so the split counts as just written however slow the machine is.
    monkeypatch.setattr(cache_module, "RACY_SECONDS", 1e12)
    folder = write_split(tmp_path, truth)
    References.from_data(folder, "test", cache_dir=tmp_path / "cache")
    assert len(_cache_files(tmp_path / "cache")) == 1
    assert _stat_records(tmp_path / "cache") == []
