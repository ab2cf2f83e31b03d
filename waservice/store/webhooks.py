"""Webhooks and their deliveries, in tables beside the event log (SQLite, blocking).

Same file and same connection as the log, so that `outbox` runs inside each append's transaction:
an event is never logged without a pending delivery for every webhook that wants it. Called only
through `EventStore.call` (one thread at a time).

A delivery is `pending` until its first attempt, `failed` while it waits for a retry, then `ok` or
`dead`. Its row is updated after each attempt; an attempt cut short by a crash left it open, so the
next start sends it again (at least once, under the same webhook-id).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import attrs
import msgspec

from ..events.model import Activity, LoggedEvent

__all__ = [
    "Delivery",
    "DeliveryResult",
    "Due",
    "StoredWebhook",
    "WebhookTables",
    "delivery_from_row",
    "due_from_row",
    "result_params",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,  -- compact JSON list of types, or ["*"]
    session_id TEXT,  -- NULL: every session
    secret TEXT NOT NULL,
    created_at REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('api', 'config')),
    enabled INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS deliveries (
    webhook_id TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'failed', 'ok', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt_at REAL,  -- the retry schedule's clock starts here
    next_attempt_at REAL NOT NULL,
    last_status_code INTEGER,
    last_error TEXT,
    updated_at REAL NOT NULL,
    UNIQUE (webhook_id, event_id)
);
-- A lane reads its oldest open deliveries; the dispatcher finds lanes with work.
CREATE INDEX IF NOT EXISTS deliveries_open
    ON deliveries (webhook_id, session_id, event_id) WHERE status IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS deliveries_by_status ON deliveries (webhook_id, status, event_id);
-- New events' lanes, and pruning with the log.
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries (event_id);
"""

OPEN = ("pending", "failed")
SNIPPET = 200  # characters of an error kept for the deliveries list

_events_json = msgspec.json.Encoder()
_events_list = msgspec.json.Decoder(list[str])


@attrs.frozen
class StoredWebhook:
    id: str
    url: str
    events: tuple[str, ...]
    session_id: str | None
    secret: str = attrs.field(repr=False)  # never printed
    created_at: float
    source: str = "api"
    enabled: bool = True


@attrs.frozen
class Delivery:
    """A row of the deliveries list (GET /webhooks/{id}/deliveries)."""

    event_id: int
    event_type: str | None  # None once the event was pruned
    session_id: str
    status: str
    attempts: int
    next_attempt_at: float | None  # only while open
    last_status_code: int | None
    last_error: str | None
    updated_at: float


@attrs.frozen
class Due:
    """An open delivery with its event, as a lane sends it."""

    event: LoggedEvent
    body: bytes  # the envelope exactly as msgspec encodes the LoggedEvent
    attempts: int
    first_attempt_at: float | None
    next_attempt_at: float


@attrs.frozen
class DeliveryResult:
    webhook_id: str
    event_id: int
    status: str  # failed, ok or dead
    attempted_at: float
    next_attempt_at: float  # for failed; else the attempt's time
    status_code: int | None
    error: str | None


class _Envelope(msgspec.Struct, frozen=True):
    """LoggedEvent's fields in its order, with the logged data bytes passed through untouched."""

    id: int
    type: str
    session_id: str
    timestamp: str
    data: msgspec.Raw


_envelope = msgspec.json.Encoder()
_data = msgspec.json.Decoder(dict)


class WebhookTables:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.executescript(_SCHEMA)

    # -- inside the log's append ----------------------------------------------------------------

    def outbox(
        self, db: sqlite3.Connection, events: Sequence[LoggedEvent], _sources: Sequence[Activity] = ()
    ) -> None:
        """One pending delivery per (enabled webhook that wants it, event); in the append's transaction."""
        if not events:
            return
        now = time.time()
        db.executemany(
            "INSERT INTO deliveries (webhook_id, event_id, session_id, status, next_attempt_at, updated_at)"
            " SELECT w.id, ?1, ?2, 'pending', 0, ?4 FROM webhooks w"
            " WHERE w.enabled = 1 AND (w.session_id IS NULL OR w.session_id = ?2)"
            " AND (w.events = '[\"*\"]' OR EXISTS (SELECT 1 FROM json_each(w.events) j WHERE j.value = ?3))"
            " ON CONFLICT DO NOTHING",
            [(e.id, e.session_id, e.type, now) for e in events],
        )

    # -- webhooks -------------------------------------------------------------------------------

    def create(self, webhook: StoredWebhook) -> None:
        self._db.execute(
            "INSERT INTO webhooks (id, url, events, session_id, secret, created_at, source, enabled)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            _row(webhook),
        )

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM webhooks WHERE source = 'api'").fetchone()[0]

    def sync_config(self, configured: Sequence[StoredWebhook]) -> list[str]:
        """Make the config file's webhooks the enabled 'config' rows; returns the ids disabled.

        A configured webhook keeps its id (derived from url and session) across restarts, so its
        delivery state does too. One removed from the file is disabled, not deleted: its open
        deliveries wait, and resume if it comes back; they leave with the log's retention.
        """
        with self._transaction():
            for webhook in configured:
                self._db.execute(
                    "INSERT INTO webhooks (id, url, events, session_id, secret, created_at, source, enabled)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                    " events = excluded.events, secret = excluded.secret, source = 'config', enabled = 1",
                    _row(webhook),
                )
            keep = [w.id for w in configured]
            gone = [
                row[0]
                for row in self._db.execute(
                    "SELECT id FROM webhooks WHERE source = 'config' AND enabled = 1"
                    f" AND id NOT IN ({', '.join('?' * len(keep))})",
                    keep,
                )
            ]
            self._db.executemany("UPDATE webhooks SET enabled = 0 WHERE id = ?", [(i,) for i in gone])
        return gone

    def enabled(self, session_id: str | None = None) -> list[StoredWebhook]:
        """Enabled webhooks, oldest first; with `session_id`, only those filtered to that session."""
        sql = f"SELECT {_COLUMNS} FROM webhooks WHERE enabled = 1"
        args: list[object] = []
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
        return [_webhook(row) for row in self._db.execute(sql + " ORDER BY created_at, id", args)]

    def get(self, webhook_id: str) -> StoredWebhook | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM webhooks WHERE id = ? AND enabled = 1", (webhook_id,)
        ).fetchone()
        return _webhook(row) if row else None

    def delete(self, webhook_id: str) -> bool:
        with self._transaction():
            gone = self._db.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount
            self._db.execute("DELETE FROM deliveries WHERE webhook_id = ?", (webhook_id,))
        return gone > 0

    # -- deliveries -----------------------------------------------------------------------------

    def deliveries(
        self, webhook_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[list[Delivery], int]:
        """A page of a webhook's deliveries, newest event first, and how many match."""
        where = "d.webhook_id = ?"
        args: list[object] = [webhook_id]
        if status is not None:
            where += " AND d.status = ?"
            args.append(status)
        (total,) = self._db.execute(f"SELECT COUNT(*) FROM deliveries d WHERE {where}", args).fetchone()
        rows = self._db.execute(
            "SELECT d.event_id, e.type, d.session_id, d.status, d.attempts, d.next_attempt_at,"
            " d.last_status_code, d.last_error, d.updated_at"
            f" FROM deliveries d LEFT JOIN events e ON e.id = d.event_id WHERE {where}"
            " ORDER BY d.event_id DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        return [delivery_from_row(r) for r in rows], total

    def redeliver(self, webhook_id: str, event_id: int | None) -> int:
        """Dead deliveries (or the one of `event_id`, whatever its status) back to pending, due now.

        The schedule starts over: a fresh day of retries from the next attempt."""
        sql = (
            "UPDATE deliveries SET status = 'pending', attempts = 0, first_attempt_at = NULL,"
            " next_attempt_at = 0, updated_at = ? WHERE webhook_id = ?"
        )
        args: list[object] = [time.time(), webhook_id]
        if event_id is None:
            sql += " AND status = 'dead'"
        else:
            sql += " AND event_id = ?"
            args.append(event_id)
        return self._db.execute(sql, args).rowcount

    def lanes_with_work(
        self, webhook_id: str | None = None, events: tuple[int, int] | None = None
    ) -> list[tuple[str, str]]:
        """(webhook, session) pairs with open deliveries: all, one webhook's, or those of events in
        the id range (after, upto]."""
        sql = (
            "SELECT DISTINCT d.webhook_id, d.session_id"
            " FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id"
            " WHERE w.enabled = 1 AND d.status IN ('pending', 'failed')"
        )
        args: list[object] = []
        if webhook_id is not None:
            sql += " AND d.webhook_id = ?"
            args.append(webhook_id)
        if events is not None:
            sql += " AND d.event_id > ? AND d.event_id <= ?"
            args.extend(events)
        return [(w, s) for w, s in self._db.execute(sql, args)]

    def due(self, webhook_id: str, session_id: str, limit: int) -> list[Due]:
        """A lane's oldest open deliveries with their events, in log order."""
        rows = self._db.execute(
            "SELECT e.id, e.type, e.session_id, e.timestamp, e.data,"
            " d.attempts, d.first_attempt_at, d.next_attempt_at"
            " FROM deliveries d JOIN events e ON e.id = d.event_id"
            " WHERE d.webhook_id = ? AND d.session_id = ? AND d.status IN ('pending', 'failed')"
            " ORDER BY d.event_id LIMIT ?",
            (webhook_id, session_id, limit),
        )
        return [due_from_row(row) for row in rows]

    def record(self, results: Sequence[DeliveryResult]) -> None:
        """Attempts' outcomes, in one transaction (many lanes share its fsync)."""
        now = time.time()
        with self._transaction():
            self._db.executemany(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1,"
                " first_attempt_at = COALESCE(first_attempt_at, ?), next_attempt_at = ?,"
                " last_status_code = ?, last_error = ?, updated_at = ?"
                " WHERE webhook_id = ? AND event_id = ? AND status IN ('pending', 'failed')",
                result_params(results, now),
            )

    def prune(self, limit: int = 10_000) -> int:
        """Delete up to `limit` deliveries whose event the log has pruned (same retention)."""
        row = self._db.execute("SELECT MIN(id) FROM events").fetchone()
        if row[0] is None:  # empty log: everything up to the last id ever given out is gone
            seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            oldest = (seq[0] if seq else 0) + 1
        else:
            oldest = row[0]
        return self._db.execute(
            "DELETE FROM deliveries WHERE rowid IN (SELECT rowid FROM deliveries WHERE event_id < ? LIMIT ?)",
            (oldest, limit),
        ).rowcount

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def delivery_from_row(r: Sequence) -> Delivery:
    """A Delivery from (event id, type, session, status, attempts, next attempt, last status code,
    last error, updated at)."""
    return Delivery(
        event_id=r[0],
        event_type=r[1],
        session_id=r[2],
        status=r[3],
        attempts=r[4],
        next_attempt_at=r[5] if r[3] in OPEN else None,
        last_status_code=r[6],
        last_error=r[7],
        updated_at=r[8],
    )


def result_params(results: Sequence[DeliveryResult], now: float) -> list[tuple[object, ...]]:
    """`record`'s parameters per attempt: status, attempted at, next attempt, status code, error,
    updated at, webhook id, event id."""
    return [
        (
            r.status,
            r.attempted_at,
            r.next_attempt_at,
            r.status_code,
            r.error[:SNIPPET] if r.error else None,
            now,
            r.webhook_id,
            r.event_id,
        )
        for r in results
    ]


def due_from_row(row: Sequence) -> Due:
    """A Due from (id, type, session, timestamp, data JSON, attempts, first attempt, next attempt)."""
    id_, type_, session, timestamp, data, attempts, first, next_at = row
    body = _envelope.encode(_Envelope(id_, type_, session, timestamp, msgspec.Raw(data)))
    event = LoggedEvent(id_, type_, session, timestamp, _data.decode(data))
    return Due(event, body, attempts, first, next_at)


_COLUMNS = "id, url, events, session_id, secret, created_at, source, enabled"


def _row(w: StoredWebhook) -> tuple[object, ...]:
    events = _events_json.encode(list(w.events)).decode()
    return (w.id, w.url, events, w.session_id, w.secret, w.created_at, w.source, int(w.enabled))


def _webhook(row: tuple) -> StoredWebhook:
    id_, url, events, session_id, secret, created_at, source, enabled = row
    return StoredWebhook(
        id_, url, tuple(_events_list.decode(events)), session_id, secret, created_at, source, bool(enabled)
    )
