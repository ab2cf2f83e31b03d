"""The registry: which sessions exist and whether they start by themselves (SQLite, blocking).

Called only from worker threads through SessionStore; one call at a time (its limiter holds one).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import attrs

from ..errors import InvalidSessionId
from ..ids import validate_session_id
from .keys import KeyTable

__all__ = ["CorruptRegistry", "Registry", "StoredSession"]

log = logging.getLogger("waservice.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    autoconnect INTEGER NOT NULL DEFAULT 1
)
"""
# Added after the first release: why a session stays down (e.g. replaced by another client).
_COLUMNS = {"down_reason": "TEXT"}


class CorruptRegistry(Exception):
    """waservice.db cannot be read as a registry; starting would lose or invent sessions."""


@attrs.frozen
class StoredSession:
    id: str
    created_at: float
    autoconnect: bool  # False after /disconnect or a replacement: stay down across restarts
    down_reason: str | None = None


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # Writes are a few per user action; autocommit keeps every one durable at once.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._check()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._migrate()
            self.keys = KeyTable(self._db)
        except sqlite3.OperationalError as exc:  # permissions, a read-only disk: not corruption
            raise OSError(f"cannot open {path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise CorruptRegistry(
                f"{path} is not a readable session registry ({exc}). Move it aside to start with no "
                "sessions (the device folders beside it are kept), or restore it from a backup."
            ) from None

    def _check(self) -> None:
        (result,) = self._db.execute("PRAGMA quick_check").fetchone()
        if result != "ok":
            raise sqlite3.DatabaseError(result)

    def _migrate(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(sessions)")}
        for name, kind in _COLUMNS.items():
            if name not in present:
                self._db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self._db.close()

    def list(self) -> list[StoredSession]:
        rows = self._db.execute(
            "SELECT id, created_at, autoconnect, down_reason FROM sessions ORDER BY created_at, id"
        ).fetchall()
        sessions = []
        for session_id, created_at, autoconnect, down_reason in rows:
            try:
                validate_session_id(session_id)
            except InvalidSessionId as exc:
                log.warning("skipping stored session %r: %s", session_id, exc.message)
                continue
            sessions.append(StoredSession(session_id, created_at, bool(autoconnect), down_reason))
        return sessions

    def add(self, session_id: str, autoconnect: bool) -> None:
        self._db.execute(
            "INSERT INTO sessions (id, created_at, autoconnect) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET autoconnect = excluded.autoconnect, down_reason = NULL",
            (session_id, time.time(), int(autoconnect)),
        )

    def ensure(self, session_id: str) -> None:
        """Register the session unless it is (the `default` session always exists)."""
        self._db.execute(
            "INSERT OR IGNORE INTO sessions (id, created_at) VALUES (?, ?)", (session_id, time.time())
        )

    def set_autoconnect(self, session_id: str, autoconnect: bool, down_reason: str | None) -> None:
        self._db.execute(
            "UPDATE sessions SET autoconnect = ?, down_reason = ? WHERE id = ?",
            (int(autoconnect), None if autoconnect else down_reason, session_id),
        )

    def remove(self, session_id: str) -> None:
        self.keys.delete_session(session_id)  # a key must not outlive its session (nor reach a new one)
        self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
