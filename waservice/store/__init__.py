"""What must survive a restart: the registry of sessions and the layout of the data directory.

<data_dir>/waservice.db      this registry (SQLite)
<data_dir>/<session_id>/     one folder per session, owned by the engine (device keys)
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import attrs

from ..sessions.ids import validate_session_id

__all__ = ["SessionStore", "StoredSession"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    autoconnect INTEGER NOT NULL DEFAULT 1
)
"""


@attrs.frozen
class StoredSession:
    id: str
    created_at: float
    autoconnect: bool  # False after an explicit /disconnect: stay down across restarts


class SessionStore:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        # Writes are a few per user action; autocommit keeps every one durable at once.
        self._db = sqlite3.connect(data_dir / "waservice.db", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def directory(self, session_id: str) -> Path:
        return self.data_dir / validate_session_id(session_id)

    def list(self) -> list[StoredSession]:
        rows = self._db.execute("SELECT id, created_at, autoconnect FROM sessions ORDER BY created_at, id")
        return [StoredSession(id=r[0], created_at=r[1], autoconnect=bool(r[2])) for r in rows]

    def add(self, session_id: str) -> None:
        self.directory(session_id).mkdir(exist_ok=True)
        self._db.execute(
            "INSERT OR IGNORE INTO sessions (id, created_at) VALUES (?, ?)", (session_id, time.time())
        )

    def set_autoconnect(self, session_id: str, autoconnect: bool) -> None:
        self._db.execute("UPDATE sessions SET autoconnect = ? WHERE id = ?", (int(autoconnect), session_id))

    def remove(self, session_id: str) -> None:
        """Forget the session and delete its folder, credentials included."""
        directory = self.directory(session_id)
        self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        shutil.rmtree(directory, ignore_errors=True)
