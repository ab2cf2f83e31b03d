"""The durable event log: every event, in order, before anyone is told about it (SQLite, blocking).

Called from worker threads through `EventStore`. It shares the registry's file (waservice.db) but
has its own connections, so an event burst never waits for a session change: one only appends (and
prunes), the other serves everything else (reads, the webhook tables beside the log). WAL lets the
reads run during an append, so a busy webhook dispatcher or a replaying stream never delays the
write that makes an event durable.

Durability: WAL with synchronous=FULL, so a returned `append` has been fsynced; the caller batches
events to pay for one fsync per batch, not per event.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import msgspec

from ..events.model import Activity, LoggedEvent, iso_utc

__all__ = ["EventLog", "Outbox"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: an id is never reused after pruning
    session_id TEXT NOT NULL,
    type TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    data BLOB NOT NULL,  -- JSON
    dedup_key TEXT,
    received REAL NOT NULL,
    logged_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_once
    ON events (session_id, type, dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_session ON events (session_id, id);
CREATE INDEX IF NOT EXISTS events_by_age ON events (logged_at);
"""

# Called inside append's transaction with the events it logged and, at the same index, the
# Activity each came from (its private `attachment`, for one): a webhook outbox records its
# deliveries atomically with the events, so an event is never logged without them, or vice versa.
Outbox = Callable[[sqlite3.Connection, Sequence[LoggedEvent], Sequence[Activity]], None]

_json = msgspec.json.Encoder()
_data = msgspec.json.Decoder(dict)


class EventLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = _connect(path)  # appends and pruning
        self._db.executescript(_SCHEMA)
        self._side = _connect(path)  # everything else
        self.outboxes: list[Outbox] = []

    @property
    def connection(self) -> sqlite3.Connection:
        """For the stores that keep their tables beside the log (webhooks): the connection that does
        not append. One thread at a time (EventStore.call)."""
        return self._side

    def close(self) -> None:
        self._db.close()
        self._side.close()

    def append(self, batch: Iterable[Activity]) -> list[LoggedEvent]:
        """Log the batch in one transaction; returns what was logged (duplicates are skipped)."""
        now = time.time()
        logged: list[LoggedEvent] = []
        sources: list[Activity] = []
        with self._transaction():
            for activity in batch:
                timestamp = iso_utc(activity.timestamp)
                row = self._db.execute(
                    "INSERT INTO events (session_id, type, timestamp, data, dedup_key, received, logged_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                    (
                        activity.session_id,
                        activity.type,
                        timestamp,
                        _json.encode(activity.data),
                        activity.key,
                        activity.received or now,
                        now,
                    ),
                ).fetchone()
                if row is not None:
                    logged.append(
                        LoggedEvent(row[0], activity.type, activity.session_id, timestamp, activity.data)
                    )
                    sources.append(activity)
            for outbox in self.outboxes:
                outbox(self._db, logged, sources)
        return logged

    def after(
        self,
        after_id: int,
        limit: int,
        session_id: str | None = None,
        types: Sequence[str] | None = None,
    ) -> list[LoggedEvent]:
        """Events with an id above `after_id`, oldest first, optionally for one session and types."""
        sql = "SELECT id, type, session_id, timestamp, data FROM events WHERE id > ?"
        args: list[object] = [after_id]
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
        if types:
            sql += f" AND type IN ({', '.join('?' * len(types))})"
            args.extend(types)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [
            LoggedEvent(id_, type_, session, timestamp, _data.decode(data))
            for id_, type_, session, timestamp, data in self._side.execute(sql, args)
        ]

    def get(self, event_id: int) -> LoggedEvent | None:
        found = self.after(event_id - 1, 1)
        return found[0] if found and found[0].id == event_id else None

    def last_id(self) -> int:
        (value,) = self._side.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        if value == 0:  # everything pruned: the sequence still remembers the last id given out
            row = self._side.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            value = row[0] if row else 0
        return int(value)

    def prune(self, before: float, limit: int = 10_000) -> int:
        """Delete up to `limit` events logged before `before` (unix time); returns how many."""
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM events WHERE id IN "
                "(SELECT id FROM events WHERE logged_at < ? ORDER BY id LIMIT ?)",
                (before, limit),
            )
        return cursor.rowcount

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=5000")  # the other connections write the same file
    return db


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
