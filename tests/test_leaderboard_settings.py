"""Leaderboard settings: defaults, environment variables, overrides and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from leaderboard import LeaderboardSettings
from leaderboard.settings import DEFAULT_DATA, DEFAULT_DB_PATH


def test_defaults_point_at_the_git_ignored_data_folder_and_the_embedded_split():
    settings = LeaderboardSettings.from_env({})
    assert settings.db_path == DEFAULT_DB_PATH == Path("leaderboard-data/leaderboard.sqlite")
    assert (settings.data, settings.split) == (DEFAULT_DATA, "test")
    assert settings.backup_repo is None and settings.hf_token is None
    assert "/leaderboard-data/" in (Path(__file__).parents[1] / ".gitignore").read_text()


def test_environment_is_read_and_overrides_win():
    environ = {
        "LLMSEG_LEADERBOARD_DB": "/tmp/x/lb.sqlite",
        "LLMSEG_LEADERBOARD_DATA": "org/private-heldout",
        "LLMSEG_LEADERBOARD_SPLIT": "validation",
        "LLMSEG_LEADERBOARD_MAX_UPLOAD_MB": "2.5",
        "LLMSEG_LEADERBOARD_RATE_LIMIT": "3",
        "LLMSEG_LEADERBOARD_BACKUP_REPO": "org/backup",
        "HF_TOKEN": "secret",
    }
    settings = LeaderboardSettings.from_env(environ, split=None, rate_limit_per_day=7)
    assert settings.db_path == Path("/tmp/x/lb.sqlite")
    assert (settings.data, settings.split, settings.max_upload_mb) == ("org/private-heldout", "validation", 2.5)
    assert settings.max_upload_bytes == int(2.5 * 2**20)
    assert (settings.rate_limit_per_day, settings.backup_repo, settings.hf_token) == (7, "org/backup", "secret")
    assert "secret" not in repr(settings)
    assert settings.blobs_dir == Path("/tmp/x/submissions")
    assert settings.resolved_baselines_dir() is None  # a Hub id has no local baselines folder


def test_baselines_default_to_the_data_folder(tmp_path):
    assert LeaderboardSettings(data=str(tmp_path)).resolved_baselines_dir() == tmp_path / "baselines"
    assert (
        LeaderboardSettings(data=str(tmp_path), baselines_dir=tmp_path / "b").resolved_baselines_dir() == tmp_path / "b"
    )


@pytest.mark.parametrize(
    ("environ", "overrides", "message"),
    [
        ({"LLMSEG_LEADERBOARD_RATE_LIMIT": "many"}, {}, "LLMSEG_LEADERBOARD_RATE_LIMIT='many' is not a number"),
        ({}, {"rate_limit_per_day": 0}, "rate_limit_per_day must be a positive integer"),
        ({}, {"max_upload_mb": -1}, "max_upload_mb must be positive"),
        ({}, {"split": " "}, "split must name"),
        ({}, {"colour": "red"}, "unknown leaderboard setting"),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(environ, overrides, message):
    with pytest.raises(ValueError, match=message):
        LeaderboardSettings.from_env(environ, **overrides)
