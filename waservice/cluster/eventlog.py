"""The event log of a cluster, on PostgreSQL (blocking): store/eventlog.py's `EventLog`, shared by every node.

Ids are one sequence for the whole cluster, so a webhook and a stream see the same ids whichever
node logged an event. They must also become *visible* in increasing order: a follower reads
`id > cursor`, and an id committed after a larger one would be skipped for good. So every append
starts by locking the one row of `ws_event_head` (the last id given out): appends from all nodes
take their turn, one lock per batch, and each commits before the next takes its ids. The row also
remembers the last id after pruning, so an id is never given out twice.

Each append's transaction also runs the outboxes (webhook deliveries, the message index) with its
connection, and sends NOTIFY `ws_events` with the new last id, so the other nodes' followers read it
(cluster/follower.py). Called from worker threads through `PgEventStore`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import msgspec
import psycopg

from ..events.model import Activity, LoggedEvent, iso_utc
from .database import Database

__all__ = ["CHANNEL", "PgEventLog", "PgOutbox"]

CHANNEL = "ws_events"  # NOTIFY channel; the payload is the new last id

# As store/eventlog.Outbox, with the append's psycopg connection.
PgOutbox = Callable[[psycopg.Connection, Sequence[LoggedEvent], Sequence[Activity]], None]

_json = msgspec.json.Encoder()
_data = msgspec.json.Decoder(dict)

# One statement per batch; rows keep the batch's order and ids. A duplicate (same session, type and
# key, within the batch or logged before) is skipped and its id left unused.
_INSERT = """
INSERT INTO ws_events (id, session_id, type, timestamp, data, dedup_key, received, logged_at)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[],
                     %s::float8[], %s::float8[])
ON CONFLICT DO NOTHING
RETURNING id
"""


class PgEventLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.outboxes: list[PgOutbox] = []

    @property
    def connection(self) -> Database:
        """What the tables beside the log are built with: each of their methods takes a pooled
        connection for one transaction (EventLog's is a SQLite connection)."""
        return self.db

    def close(self) -> None:
        """Nothing of its own to close: the pool belongs to whoever opened the Database."""

    def append(self, batch: Iterable[Activity]) -> list[LoggedEvent]:
        """Log the batch in one transaction; returns what was logged (duplicates are skipped)."""
        return self.db.run(self._append, list(batch))

    def _append(self, conn: psycopg.Connection, batch: list[Activity]) -> list[LoggedEvent]:
        (head,) = conn.execute("SELECT last_id FROM ws_event_head FOR UPDATE").fetchone()
        if not batch:
            return []
        now = time.time()
        ids = list(range(head + 1, head + 1 + len(batch)))
        stamps = [iso_utc(a.timestamp) for a in batch]
        inserted = {
            row[0]
            for row in conn.execute(
                _INSERT,
                (
                    ids,
                    [a.session_id for a in batch],
                    [a.type for a in batch],
                    stamps,
                    [_json.encode(a.data) for a in batch],
                    [a.key for a in batch],
                    [a.received or now for a in batch],
                    [now] * len(batch),
                ),
            )
        }
        logged: list[LoggedEvent] = []
        sources: list[Activity] = []
        for id_, stamp, activity in zip(ids, stamps, batch, strict=True):
            if id_ in inserted:
                logged.append(LoggedEvent(id_, activity.type, activity.session_id, stamp, activity.data))
                sources.append(activity)
        for outbox in self.outboxes:
            outbox(conn, logged, sources)
        if logged:
            conn.execute("UPDATE ws_event_head SET last_id = %s", (logged[-1].id,))
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(logged[-1].id)))
        return logged

    def after(
        self,
        after_id: int,
        limit: int,
        session_id: str | None = None,
        types: Sequence[str] | None = None,
    ) -> list[LoggedEvent]:
        """Events with an id above `after_id`, oldest first, optionally for one session and types."""
        sql = "SELECT id, type, session_id, timestamp, data FROM ws_events WHERE id > %s"
        args: list[object] = [after_id]
        if session_id is not None:
            sql += " AND session_id = %s"
            args.append(session_id)
        if types:
            sql += " AND type = ANY(%s)"
            args.append(list(types))
        sql += " ORDER BY id LIMIT %s"
        args.append(limit)
        rows = self.db.run(lambda conn: conn.execute(sql, args).fetchall())
        return [
            LoggedEvent(id_, type_, session, timestamp, _data.decode(data))
            for id_, type_, session, timestamp, data in rows
        ]

    def get(self, event_id: int) -> LoggedEvent | None:
        found = self.after(event_id - 1, 1)
        return found[0] if found and found[0].id == event_id else None

    def last_id(self) -> int:
        """The newest committed event's id (or the last given out, once everything is pruned)."""
        return self.db.run(lambda conn: conn.execute("SELECT last_id FROM ws_event_head").fetchone()[0])

    def prune(self, before: float, limit: int = 10_000) -> int:
        """Delete up to `limit` events logged before `before` (unix time); returns how many."""
        return self.db.run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM ws_events WHERE id IN"
                    " (SELECT id FROM ws_events WHERE logged_at < %s ORDER BY id LIMIT %s)",
                    (before, limit),
                ).rowcount
            )
        )
