"""The message index on PostgreSQL (blocking): store/messages.py's `MessageTable` for a cluster.

A session moves between nodes; a reply, reaction or media download on its new owner needs what the
old owner indexed. So the rows live in `ws_messages` (migration 4), written by `outbox` in the event
log's append transaction (received messages) and by `add_many` (sent ones). `MessageIndex` uses it
unchanged: `MessageIndex.open(store, table_type=PgMessageTable)`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg

from ..events.model import Activity, LoggedEvent
from ..store.messages import IndexedMessage, indexed_from_row, message_row, received_rows
from .database import Database

__all__ = ["PgMessageTable"]

# A redelivered message (same id) refreshes its row: the newest copy wins. from_me comes as 0 or 1.
_UPSERT = """
INSERT INTO ws_messages (session_id, message_id, chat, chat_jid, sender_jid, from_me, kind, text,
                         attachment, mimetype, indexed_at)
VALUES (%s, %s, %s, %s, %s, %s::int <> 0, %s, %s, %s, %s, %s)
ON CONFLICT (session_id, message_id) DO UPDATE SET
    chat = EXCLUDED.chat, chat_jid = EXCLUDED.chat_jid, sender_jid = EXCLUDED.sender_jid,
    from_me = EXCLUDED.from_me, kind = EXCLUDED.kind, text = EXCLUDED.text,
    attachment = EXCLUDED.attachment, mimetype = EXCLUDED.mimetype, indexed_at = EXCLUDED.indexed_at
"""


class PgMessageTable:
    """Called through `PgEventStore.call` (a worker thread, a pooled connection per call), except
    `outbox`, which the log calls inside its append transaction with that transaction's connection."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def outbox(
        self, conn: psycopg.Connection, logged: Sequence[LoggedEvent], sources: Sequence[Activity]
    ) -> None:
        rows = received_rows(logged, sources, time.time())
        if rows:
            conn.cursor().executemany(_UPSERT, rows)

    def add_many(self, messages: Sequence[IndexedMessage]) -> None:
        """Index messages this service sent (or any others), in one transaction."""
        now = time.time()
        rows = [message_row(message, now) for message in messages]
        self._db.run(lambda conn: conn.cursor().executemany(_UPSERT, rows))

    def get(self, session_id: str, message_id: str) -> IndexedMessage | None:
        row = self._db.run(
            lambda conn: conn.execute(
                "SELECT session_id, message_id, chat, chat_jid, sender_jid, from_me, kind, text, attachment,"
                " mimetype FROM ws_messages WHERE session_id = %s AND message_id = %s",
                (session_id, message_id),
            ).fetchone()
        )
        return None if row is None else indexed_from_row(row)

    def forget_session(self, session_id: str) -> int:
        return self._db.run(
            lambda conn: conn.execute("DELETE FROM ws_messages WHERE session_id = %s", (session_id,)).rowcount
        )

    def prune(self, before: float, limit: int = 10_000) -> int:
        """Delete up to `limit` rows indexed before `before` (unix time), the log's retention."""
        return self._db.run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM ws_messages WHERE (session_id, message_id) IN (SELECT session_id, message_id"
                    " FROM ws_messages WHERE indexed_at < %s ORDER BY indexed_at LIMIT %s)",
                    (before, limit),
                ).rowcount
            )
        )
