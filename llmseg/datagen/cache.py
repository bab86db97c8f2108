"""A disk cache of completions keyed by a hash of the request, so a re-run costs nothing.

The key covers everything that shapes the answer: the backend's identity (kind + model), the
generation settings and the full messages (images included, as data URLs). SQLite keeps it one
file that survives interruption; only the thread that runs the stage reads and writes it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from llmseg.datagen.backends import Completion

CACHE_FILE = "cache.sqlite"


def request_key(identity: str, settings: dict[str, Any], messages: list[dict[str, Any]]) -> str:
    """SHA-256 of the canonical JSON of a request: stable across runs and machines."""
    payload = json.dumps({"backend": identity, "settings": settings, "messages": messages}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CompletionCache:
    """Completions by request key, in ``<work>/cache.sqlite``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS completions ("
            "key TEXT PRIMARY KEY, text TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, "
            "completion_tokens INTEGER NOT NULL, model TEXT NOT NULL)"
        )
        self._db.commit()

    def get(self, key: str) -> Completion | None:
        row = self._db.execute(
            "SELECT text, prompt_tokens, completion_tokens, model FROM completions WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return Completion(text=row[0], prompt_tokens=row[1], completion_tokens=row[2], model=row[3])

    def put(self, key: str, completion: Completion) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?)",
            (key, completion.text, completion.prompt_tokens, completion.completion_tokens, completion.model),
        )
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])
