"""Storage rules: rate limit, duplicates, concurrency, crash recovery, cached baselines, raw files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from test_leaderboard_support import make_masks, predictions_file, shifted, write_split

from eval import References, evaluate, read_predictions
from leaderboard import Leaderboard, LeaderboardSettings, SubmissionRejected

pytest_plugins = ["test_leaderboard_support"]

ROOT = Path(__file__).resolve().parents[1]
DAY = 24 * 60 * 60


class Clock:
    """A settable clock, so the 24-hour window can be crossed without waiting."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _variant(truth: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """A distinct but valid prediction set: sample 0 gets ``k`` extra pixels set."""
    masks = {i: m.copy() for i, m in truth.items()}
    first = next(iter(masks))
    masks[first].flat[masks[first].size - 1 - np.arange(k)] = True
    return masks


def _rows(db: Path) -> list[dict]:
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM submissions ORDER BY id")]


def test_rate_limit_counts_scored_submissions_per_user_in_24_hours(lb_settings, truth, tmp_path):
    clock = Clock()
    board = Leaderboard(
        LeaderboardSettings.from_env({}, db_path=lb_settings.db_path, data=lb_settings.data, rate_limit_per_day=2),
        clock=clock,
    )
    files = [predictions_file(tmp_path / f"p{k}.jsonl", _variant(truth, k)) for k in range(4)]
    board.submit(files[0], model_name="m", user="erin")
    clock.now += DAY / 2
    board.submit(files[1], model_name="m", user="erin")
    with pytest.raises(SubmissionRejected, match="the limit is 2: try again after"):
        board.submit(files[2], model_name="m", user="erin")
    assert board.submit(files[2], model_name="m", user="frank").status == "scored"  # per user
    clock.now += DAY / 2 + 1  # the first submission leaves the window
    assert board.submit(files[2], model_name="m", user="erin").status == "scored"
    with pytest.raises(SubmissionRejected, match="limit"):
        board.submit(files[3], model_name="m", user="erin")


def test_same_file_from_same_user_is_a_duplicate(board, truth, tmp_path):
    path = predictions_file(tmp_path / "p.jsonl", truth)
    first = board.submit(path, model_name="first", user="gina")
    with pytest.raises(SubmissionRejected, match=rf"already submitted this exact file \(submission #{first.id}"):
        board.submit(path.read_bytes(), model_name="renamed", user="gina")
    assert board.submit(path, model_name="first", user="hank").status == "scored"  # another user may


def test_twenty_concurrent_submissions_are_all_stored_and_scored(lb_settings, truth):
    board = Leaderboard(lb_settings)
    contents = [
        "".join(json.dumps({"id": i, "mask": m}) + "\n" for i, m in _encoded(_variant(truth, k + 1)).items())
        for k in range(20)
    ]
    results: dict[int, object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(20)

    def submit(k: int) -> None:
        try:
            start.wait()
            results[k] = board.submit(contents[k].encode(), model_name=f"model-{k}", user=f"user-{k % 4}")
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = _rows(lb_settings.db_path)
    assert len(rows) == 20 and {row["status"] for row in rows} == {"scored"}
    assert sorted(row["model_name"] for row in rows) == sorted(f"model-{k}" for k in range(20))
    assert len({result.id for result in results.values()}) == 20


def _encoded(masks: dict[str, np.ndarray]) -> dict[str, dict]:
    from eval.rle import encode

    return {i: encode(m) for i, m in masks.items()}


def test_rate_limit_holds_under_concurrency(lb_settings, truth):
    board = Leaderboard(
        LeaderboardSettings.from_env({}, db_path=lb_settings.db_path, data=lb_settings.data, rate_limit_per_day=3)
    )
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def submit(k: int) -> None:
        content = "".join(json.dumps({"id": i, "mask": m}) + "\n" for i, m in _encoded(_variant(truth, k + 1)).items())
        start.wait()
        try:
            board.submit(content.encode(), model_name="m", user="ivy")
            outcomes.append("scored")
        except SubmissionRejected:
            outcomes.append("rejected")

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["rejected"] * 5 + ["scored"] * 3


KILLED_SUBMITTER = textwrap.dedent(
    """
    import sys, time
    import leaderboard.scoring
    from leaderboard import Leaderboard, LeaderboardSettings

    board = Leaderboard(LeaderboardSettings.from_env({}, db_path=sys.argv[1], data=sys.argv[2]))
    real_evaluate = leaderboard.scoring.evaluate

    def slow_evaluate(*args, **kwargs):
        print("scoring", flush=True)
        time.sleep(120)
        return real_evaluate(*args, **kwargs)

    leaderboard.scoring.evaluate = slow_evaluate
    board.submit(sys.argv[3], model_name="killed", user="jack")
    """
)


def test_a_process_killed_mid_scoring_leaves_a_pending_row_that_the_next_start_scores(lb_settings, truth, tmp_path):
    path = predictions_file(tmp_path / "p.jsonl", shifted(truth, 2))
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_SUBMITTER, str(lb_settings.db_path), lb_settings.data, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "scoring"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    (row,) = _rows(lb_settings.db_path)
    assert (row["status"], row["model_name"], row["scores"]) == ("pending", "killed", None)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (lb_settings.blobs_dir / f"{sha256}.jsonl").read_bytes() == path.read_bytes()

    board = Leaderboard(lb_settings)
    (row,) = _rows(lb_settings.db_path)
    expected = evaluate(read_predictions(path), References.from_data(lb_settings.data, "test"))
    assert row["status"] == "scored"
    assert json.loads(row["scores"])["giou"] == expected.giou
    assert board.table()["model"].tolist().count("killed") == 1


def test_a_pending_file_that_fails_the_ground_truth_checks_is_turned_into_a_rejection(lb_settings, truth, tmp_path):
    board = Leaderboard(lb_settings)
    wrong = predictions_file(tmp_path / "p.jsonl", {"not-an-id": next(iter(truth.values()))})
    store = board._store
    from leaderboard.submission import prepare

    submission, _ = prepare(
        wrong,
        model_name="crashed",
        user="kim",
        link=None,
        note=None,
        max_bytes=10**6,
        benchmark=board.default_benchmark,
    )
    store.add_pending(submission, now=0.0, rate_limit=board._rate_limit)  # as if the process died here
    Leaderboard(lb_settings)
    assert _rows(lb_settings.db_path) == []
    assert [r["model_name"] for r in store.rejections()] == ["crashed"]
    assert not store.blob_path(submission.sha256).exists()


def test_scores_are_recomputed_when_the_ground_truth_changes(tmp_path):
    truth = make_masks(seed=1)
    folder = write_split(tmp_path, truth)
    settings = LeaderboardSettings.from_env({}, db_path=tmp_path / "lb.sqlite", data=str(folder))
    path = predictions_file(tmp_path / "p.jsonl", truth)
    assert Leaderboard(settings).submit(path, model_name="perfect", user="lee").giou == 1.0
    write_split(tmp_path, shifted(truth, 3), name=folder.name)  # the maintainer corrects the ground truth in place
    board = Leaderboard(settings)
    expected = evaluate(read_predictions(path), References.from_data(str(folder), "test"))
    (row,) = _rows(settings.db_path)
    assert json.loads(row["scores"])["giou"] == expected.giou < 1.0
    assert board.table()["gIoU"].tolist() == [round(100 * expected.giou, 1)]


def test_baselines_are_scored_cached_and_rebuilt_when_their_file_changes(tmp_path, truth):
    folder = write_split(tmp_path, truth)
    (folder / "baselines").mkdir()
    baseline = predictions_file(folder / "baselines" / "guess.jsonl", {i: np.zeros_like(m) for i, m in truth.items()})
    settings = LeaderboardSettings.from_env({}, db_path=tmp_path / "db" / "lb.sqlite", data=str(folder))
    references = References.from_data(str(folder), "test")

    def shown() -> tuple[float, bool]:
        table = Leaderboard(settings).table()
        (row,) = table.to_dict("records")
        return row["gIoU"], row["baseline"]

    empty_giou = evaluate(read_predictions(baseline), references).giou
    assert shown() == (round(100 * empty_giou, 1), True)
    with sqlite3.connect(settings.db_path) as connection:
        (scored_at,) = connection.execute("SELECT scored_at FROM baselines").fetchone()
    Leaderboard(settings)
    with sqlite3.connect(settings.db_path) as connection:
        assert connection.execute("SELECT scored_at FROM baselines").fetchone() == (scored_at,)  # cached
    predictions_file(baseline, truth)
    assert shown() == (100.0, True)
    baseline.unlink()
    assert Leaderboard(settings).table().empty


def test_database_is_in_wal_mode_and_raw_files_are_content_addressed(board, lb_settings, truth, tmp_path):
    path = predictions_file(tmp_path / "p.jsonl", truth)
    board.submit(path, model_name="m", user="max")
    with sqlite3.connect(lb_settings.db_path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in lb_settings.blobs_dir.iterdir()] == [f"{sha256}.jsonl"]
    assert _rows(lb_settings.db_path)[0]["file_sha256"] == sha256


def test_a_database_from_a_newer_schema_is_refused(lb_settings):
    lb_settings.db_path.parent.mkdir(parents=True)
    with sqlite3.connect(lb_settings.db_path) as connection:
        connection.execute("PRAGMA user_version=99")
    with pytest.raises(ValueError, match="newer leaderboard"):
        Leaderboard(lb_settings)
