"""Hub backup: nothing attempted without a repo id and a token; with both, pushes and restores through
an injected fake ``HfApi``; a failing Hub never fails a submission."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_leaderboard_support import predictions_file

from leaderboard import Leaderboard, LeaderboardSettings

pytest_plugins = ["test_leaderboard_support"]


class FakeHfApi:
    """Records calls; ``upload_folder`` keeps a copy of what it was given, like a Hub repo would."""

    def __init__(self, repo: Path, *, fail: bool = False) -> None:
        self.repo = repo
        self.fail = fail
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self, **kwargs: Any) -> None:
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs: Any) -> None:
        self.calls.append(("upload_folder", kwargs))
        if self.fail:
            raise ConnectionError("the Hub is unreachable")
        shutil.copytree(kwargs["folder_path"], self.repo, dirs_exist_ok=True)

    def snapshot_download(self, **kwargs: Any) -> str:
        self.calls.append(("snapshot_download", kwargs))
        if self.fail:
            raise ConnectionError("the Hub is unreachable")
        shutil.copytree(self.repo, kwargs["local_dir"], dirs_exist_ok=True)
        return kwargs["local_dir"]

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected HfApi call {name}")


def _settings(lb_settings: LeaderboardSettings, **overrides: Any) -> LeaderboardSettings:
    return LeaderboardSettings.from_env({}, **{"db_path": lb_settings.db_path, "data": lb_settings.data, **overrides})


@pytest.mark.parametrize("configured", [{}, {"backup_repo": "org/backup"}, {"hf_token": "secret"}])
def test_nothing_is_attempted_without_both_repo_and_token(lb_settings, truth, tmp_path, configured):
    api = FakeHfApi(tmp_path / "hub")
    board = Leaderboard(_settings(lb_settings, **configured), hub_api=api)
    board.submit(predictions_file(tmp_path / "p.jsonl", truth), model_name="m", user="una")
    assert api.calls == []


def test_scored_submission_is_mirrored_and_restored_on_a_fresh_disk(lb_settings, truth, tmp_path):
    api = FakeHfApi(tmp_path / "hub")
    settings = _settings(lb_settings, backup_repo="org/backup", hf_token="secret")
    board = Leaderboard(settings, hub_api=api)
    path = predictions_file(tmp_path / "p.jsonl", truth)
    result = board.submit(path, model_name="mirrored", user="vic")

    uploads = [kwargs for name, kwargs in api.calls if name == "upload_folder"]
    assert len(uploads) == 1
    assert (uploads[0]["repo_id"], uploads[0]["repo_type"], uploads[0]["token"]) == ("org/backup", "dataset", "secret")
    assert (api.repo / "submissions" / f"{result.file_sha256}.jsonl").read_bytes() == path.read_bytes()
    with sqlite3.connect(api.repo / "leaderboard.sqlite") as connection:
        assert connection.execute("SELECT model_name, status FROM submissions").fetchall() == [("mirrored", "scored")]

    fresh = _settings(lb_settings, db_path=tmp_path / "fresh" / "lb.sqlite", backup_repo="org/backup", hf_token="s")
    restored = Leaderboard(fresh, hub_api=api)
    assert "mirrored" in restored.table()["model"].tolist()
    assert (fresh.blobs_dir / f"{result.file_sha256}.jsonl").exists()


def test_a_failing_hub_does_not_fail_the_submission(lb_settings, truth, tmp_path, caplog):
    api = FakeHfApi(tmp_path / "hub", fail=True)
    board = Leaderboard(_settings(lb_settings, backup_repo="org/backup", hf_token="secret"), hub_api=api)
    result = board.submit(predictions_file(tmp_path / "p.jsonl", truth), model_name="m", user="wes")
    assert result.status == "scored"
    assert "could not back up" in caplog.text and "could not restore" in caplog.text
