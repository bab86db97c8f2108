"""Mirror the database and raw submissions to a Hub dataset repo, and restore them on a fresh disk.

A Space loses its local disk on restart, so with a repo id and a token configured the leaderboard
pushes a consistent database snapshot (plus the new raw file) after each scored submission, and
pulls the mirror when it starts without a database. Without both settings nothing is attempted.
A failed push is logged, never raised: the submission is already safely scored locally.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .settings import LeaderboardSettings
from .store import Store

logger = logging.getLogger(__name__)

DB_NAME = "leaderboard.sqlite"
BLOBS_NAME = "submissions"


class HubBackup:
    """Pushes to / restores from one Hub dataset repo through a ``huggingface_hub.HfApi``.

    ``api`` is injectable so tests can record the calls instead of reaching the Hub.
    """

    def __init__(self, repo_id: str, token: str, *, api: Any | None = None) -> None:
        if api is None:
            from huggingface_hub import HfApi  # optional path: imported only when a backup is configured

            api = HfApi(token=token)
        self.repo_id = repo_id
        self.token = token
        self.api = api
        self._lock = threading.Lock()
        self._repo_ready = False

    @classmethod
    def from_settings(cls, settings: LeaderboardSettings, *, api: Any | None = None) -> HubBackup | None:
        """The configured backup, or None unless both a repo id and a token are set."""
        if not (settings.backup_repo and settings.hf_token):
            return None
        return cls(settings.backup_repo, settings.hf_token, api=api)

    def restore(self, store_db: Path, blobs_dir: Path) -> bool:
        """Fetch the mirror into place when there is no local database yet; return whether it did."""
        if store_db.exists():
            return False
        try:
            with tempfile.TemporaryDirectory() as download:
                self.api.snapshot_download(
                    repo_id=self.repo_id, repo_type="dataset", local_dir=download, token=self.token
                )
                mirrored = Path(download)
                if not (mirrored / DB_NAME).is_file():
                    return False
                store_db.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(mirrored / DB_NAME, store_db)
                blobs_dir.mkdir(parents=True, exist_ok=True)
                for blob in (mirrored / BLOBS_NAME).glob("*.jsonl"):
                    shutil.copyfile(blob, blobs_dir / blob.name)
        except Exception as error:  # any Hub failure means "start fresh", and is logged
            logger.warning("could not restore the leaderboard from %s: %s", self.repo_id, error)
            return False
        logger.info("restored the leaderboard from %s", self.repo_id)
        return True

    def push(self, store: Store, blob_hashes: Iterable[str], *, message: str) -> bool:
        """Upload a database snapshot and the given raw files in one commit; return whether it worked."""
        with self._lock, tempfile.TemporaryDirectory() as staging:
            folder = Path(staging)
            try:
                store.snapshot(folder / DB_NAME)
                (folder / BLOBS_NAME).mkdir()
                for sha256 in blob_hashes:
                    source = store.blob_path(sha256)
                    if source.exists():
                        shutil.copyfile(source, folder / BLOBS_NAME / source.name)
                if not self._repo_ready:
                    self.api.create_repo(
                        repo_id=self.repo_id, repo_type="dataset", private=True, exist_ok=True, token=self.token
                    )
                    self._repo_ready = True
                self.api.upload_folder(
                    repo_id=self.repo_id,
                    repo_type="dataset",
                    folder_path=str(folder),
                    commit_message=message,
                    token=self.token,
                )
            except Exception as error:  # the local copy is authoritative; a failed mirror is logged
                logger.warning("could not back up the leaderboard to %s: %s", self.repo_id, error)
                return False
        return True
