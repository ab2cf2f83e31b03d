"""Answers remembered by Idempotency-Key, on PostgreSQL, for several nodes (issue 10).

After a failover the session's new owner must answer a retried keyed send from the answer the old
owner stored, not send it again: so the answers live in `ws_idempotency_keys` (migration 3), where
every node finds them. The same three operations as store/idempotency.py's `IdempotencyTable`, as
an `AnswerTable` for api/idempotency.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg

from ..errors import StorageFailed
from ..store.idempotency import StoredAnswer
from .database import Database, DatabaseError

__all__ = ["PostgresIdempotencyTable"]

T = TypeVar("T")


def _get(
    conn: psycopg.Connection, scope: str, session: str, key: str, newer_than: float
) -> StoredAnswer | None:
    row = conn.execute(
        "SELECT fingerprint, status, body, created_at FROM ws_idempotency_keys"
        " WHERE scope = %s AND session = %s AND key = %s AND created_at >= %s",
        (scope, session, key, newer_than),
    ).fetchone()
    return None if row is None else StoredAnswer(bytes(row[0]), row[1], bytes(row[2]), row[3])


def _put(conn: psycopg.Connection, scope: str, session: str, key: str, answer: StoredAnswer) -> None:
    # Replaces an expired row the pruner has not reached yet; a live one is never replaced, since
    # the API answers from it instead of running the request again.
    conn.execute(
        "INSERT INTO ws_idempotency_keys (scope, session, key, fingerprint, status, body, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (scope, session, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
        " status = EXCLUDED.status, body = EXCLUDED.body, created_at = EXCLUDED.created_at",
        (scope, session, key, answer.fingerprint, answer.status, answer.body, answer.created_at),
    )


def _prune(conn: psycopg.Connection, before: float) -> int:
    return conn.execute("DELETE FROM ws_idempotency_keys WHERE created_at < %s", (before,)).rowcount


class PostgresIdempotencyTable:
    """The `AnswerTable` of a cluster: every node reads and writes the same rows."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def get(self, scope: str, session: str, key: str, newer_than: float) -> StoredAnswer | None:
        """The answer stored for this key, unless it is older than `newer_than` (unix time)."""
        return await self._call(_get, scope, session, key, newer_than)

    async def put(self, scope: str, session: str, key: str, answer: StoredAnswer) -> None:
        await self._call(_put, scope, session, key, answer)

    async def prune(self, before: float) -> int:
        """Forget answers stored before `before` (unix time); returns how many."""
        return await self._call(_prune, before)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        # A ServiceError, as SQLite's are: the route answers 503, never a 500 with a traceback.
        try:
            return await self._database.call(fn, *args)
        except DatabaseError as error:
            raise StorageFailed(f"the database refused an idempotency key: {error}") from error
