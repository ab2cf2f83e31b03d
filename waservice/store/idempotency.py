"""Answers remembered by Idempotency-Key, in a table beside the event log (SQLite, blocking).

Only finished answers are stored: a request still in flight is known to the API process alone
(api/idempotency.py), so a crash never leaves a key that answers 409 forever. `IdempotencyTable`
is called only through `EventStore.call` (one thread at a time, on the log's connection);
`LogAnswers` does that, as the `AnswerTable` that api/idempotency.py uses. Several nodes share
cluster/idempotency.py's table on PostgreSQL instead.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from . import EventStore

__all__ = ["AnswerTable", "IdempotencyTable", "LogAnswers", "StoredAnswer"]

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


class AnswerTable(Protocol):
    """Where the answers are remembered. Each method raises StorageFailed when that fails."""

    async def get(self, scope: str, session: str, key: str, newer_than: float) -> StoredAnswer | None:
        """The answer stored for this key, unless it is older than `newer_than` (unix time)."""
        ...

    async def put(self, scope: str, session: str, key: str, answer: StoredAnswer) -> None: ...

    async def prune(self, before: float) -> int:
        """Forget answers stored before `before` (unix time); returns how many."""
        ...


class LogAnswers:
    """The `AnswerTable` of one box: `IdempotencyTable` beside the event log, on its thread."""

    def __init__(self, store: EventStore, table: IdempotencyTable) -> None:
        self._store = store
        self._table = table

    @classmethod
    async def open(cls, store: EventStore) -> LogAnswers:
        return cls(store, await store.call(IdempotencyTable, store.connection))

    async def get(self, scope: str, session: str, key: str, newer_than: float) -> StoredAnswer | None:
        return await self._store.call(self._table.get, scope, session, key, newer_than)

    async def put(self, scope: str, session: str, key: str, answer: StoredAnswer) -> None:
        await self._store.call(self._table.put, scope, session, key, answer)

    async def prune(self, before: float) -> int:
        return await self._store.call(self._table.prune, before)
