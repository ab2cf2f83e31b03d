"""Answers remembered by Idempotency-Key, in a table beside the event log (SQLite, blocking).

Only finished answers are stored: a request still in flight is known to the API process alone
(api/idempotency.py), so a crash never leaves a key that answers 409 forever. Called only
through `EventStore.call` (one thread at a time, on the log's connection).
"""

from __future__ import annotations

import sqlite3

import attrs

__all__ = ["IdempotencyTable", "StoredAnswer"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope TEXT NOT NULL,  -- who asked: 'admin' or 'key:<session key id>'
    session TEXT NOT NULL,  -- the session(s) the request named, comma-separated
    key TEXT NOT NULL,  -- the Idempotency-Key header
    fingerprint BLOB NOT NULL,  -- SHA-256 of method, path, session and body
    status INTEGER NOT NULL,
    body BLOB NOT NULL,  -- the JSON answered
    created_at REAL NOT NULL,
    PRIMARY KEY (scope, session, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);
"""


@attrs.frozen
class StoredAnswer:
    fingerprint: bytes
    status: int
    body: bytes
    created_at: float


class IdempotencyTable:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.executescript(_SCHEMA)

    def get(self, scope: str, session: str, key: str, newer_than: float) -> StoredAnswer | None:
        """The answer stored for this key, unless it is older than `newer_than` (unix time)."""
        row = self._db.execute(
            "SELECT fingerprint, status, body, created_at FROM idempotency_keys"
            " WHERE scope = ? AND session = ? AND key = ? AND created_at >= ?",
            (scope, session, key, newer_than),
        ).fetchone()
        return None if row is None else StoredAnswer(bytes(row[0]), row[1], bytes(row[2]), row[3])

    def put(self, scope: str, session: str, key: str, answer: StoredAnswer) -> None:
        # Replaces an expired row the pruner has not reached yet; a live one is never replaced,
        # since the API answers from it instead of running the request again.
        self._db.execute(
            "INSERT OR REPLACE INTO idempotency_keys"
            " (scope, session, key, fingerprint, status, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (scope, session, key, answer.fingerprint, answer.status, answer.body, answer.created_at),
        )

    def prune(self, before: float) -> int:
        """Forget answers stored before `before` (unix time); returns how many."""
        return self._db.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (before,)).rowcount
