"""Per-session API keys, in the registry's SQLite (blocking; called from worker threads).

A key is `wask_<key_id>_<secret>`: the id finds the row, and only the SHA-256 of the whole key is
stored, compared in constant time. The secret is 256 random bits, so a plain hash is enough (a slow
password hash protects guessable secrets, and these are not). The rows are also kept in memory, so
checking a key on a request costs no thread hop.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Mapping

import attrs

__all__ = ["KEY_PREFIX", "KeyTable", "NewKey", "StoredKey", "find_key", "key_id_of", "keys_of", "new_key"]

KEY_PREFIX = "wask_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS session_keys (
    key_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    digest BLOB NOT NULL,
    created_at REAL NOT NULL
)
"""
_INDEX = "CREATE INDEX IF NOT EXISTS session_keys_by_session ON session_keys (session_id)"


@attrs.frozen
class StoredKey:
    key_id: str
    session_id: str
    created_at: float
    digest: bytes = attrs.field(repr=False)


@attrs.frozen
class NewKey:
    stored: StoredKey
    key: str = attrs.field(repr=False)  # shown to the admin once, never stored nor logged


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id_of(key: str) -> str | None:
    """The id inside a key that looks like one of ours, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key.removeprefix(KEY_PREFIX).partition("_")
    return key_id if sep and key_id and secret else None


def new_key(session_id: str) -> NewKey:
    """A fresh key for the session (not stored yet): 64 bits of id, 256 bits of secret."""
    key_id = secrets.token_hex(8)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return NewKey(StoredKey(key_id, session_id, time.time(), _digest(key)), key)


def keys_of(by_id: Mapping[str, StoredKey], session_id: str) -> list[StoredKey]:
    """The session's keys, oldest first."""
    keys = [k for k in by_id.values() if k.session_id == session_id]
    return sorted(keys, key=lambda k: (k.created_at, k.key_id))


def find_key(by_id: Mapping[str, StoredKey], key: str) -> StoredKey | None:
    """The stored key `key` is, among `by_id` (key id -> key), or None. No I/O."""
    key_id = key_id_of(key)
    stored = by_id.get(key_id) if key_id is not None else None
    # Hashing even for an unknown id keeps the time the same for every wrong key.
    digest = _digest(key)
    if stored is None or not hmac.compare_digest(digest, stored.digest):
        return None
    return stored


class KeyTable:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.execute(_SCHEMA)
        db.execute(_INDEX)
        self._by_id: dict[str, StoredKey] = {}
        self._reload()

    def _reload(self) -> None:
        rows = self._db.execute("SELECT key_id, session_id, created_at, digest FROM session_keys").fetchall()
        # Replaced whole, never changed in place: the trio thread reads it while a worker thread writes.
        self._by_id = {row[0]: StoredKey(row[0], row[1], row[2], bytes(row[3])) for row in rows}

    def create(self, session_id: str) -> NewKey | None:
        """A new key for the session; None if the session is not registered (deleted meanwhile)."""
        new = new_key(session_id)
        stored = new.stored
        # Only for a registered session, in one statement: a key must never outlive its session.
        cursor = self._db.execute(
            "INSERT INTO session_keys (key_id, session_id, digest, created_at) "
            "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?)",
            (stored.key_id, session_id, stored.digest, stored.created_at, session_id),
        )
        self._reload()
        return new if cursor.rowcount > 0 else None

    def list(self, session_id: str) -> list[StoredKey]:
        return keys_of(self._by_id, session_id)

    def delete(self, session_id: str, key_id: str) -> bool:
        cursor = self._db.execute(
            "DELETE FROM session_keys WHERE key_id = ? AND session_id = ?", (key_id, session_id)
        )
        self._reload()
        return cursor.rowcount > 0

    def delete_session(self, session_id: str) -> None:
        self._db.execute("DELETE FROM session_keys WHERE session_id = ?", (session_id,))
        self._reload()

    def check(self, key: str) -> StoredKey | None:
        """The stored key `key` is, or None. No I/O: safe on the trio thread."""
        return find_key(self._by_id, key)
