"""Webhooks and their deliveries on PostgreSQL (blocking): store/webhooks.py's `WebhookTables` for a cluster.

Same methods, semantics and statuses, on `ws_webhooks` and `ws_deliveries` (migration 4), so a
webhook created through any node is every node's, and `outbox` records the deliveries in the
append's transaction whichever node logged the event. Each method takes a pooled connection for one
transaction; call them through `PgEventStore.call` (a worker thread).

Which node delivers a lane is decided by cluster/lanes.py; `lanes_with_work` here leaves out the
lanes another live node holds, so a dispatcher does not start lanes only to find them taken.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg

from ..events.model import Activity, LoggedEvent
from ..store.webhooks import (
    Delivery,
    DeliveryResult,
    Due,
    StoredWebhook,
    delivery_from_row,
    due_from_row,
    result_params,
)
from .database import Database

__all__ = ["POKES", "PgWebhookTables"]

POKES = "ws_webhook_pokes"  # NOTIFY channel: a webhook's deliveries changed (payload: its id)

_COLUMNS = "id, url, events, session_id, secret, created_at, source, enabled"

# One statement per append: every (enabled webhook that wants it, event) pair becomes a delivery.
_OUTBOX = """
INSERT INTO ws_deliveries (webhook_id, event_id, session_id, status, next_attempt_at, updated_at)
SELECT w.id, e.id, e.session_id, 'pending', 0, %s
FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS e (id, session_id, type)
JOIN ws_webhooks w ON w.enabled AND (w.session_id IS NULL OR w.session_id = e.session_id)
    AND ('*' = ANY (w.events) OR e.type = ANY (w.events))
ORDER BY e.id
ON CONFLICT DO NOTHING
"""


class PgWebhookTables:
    def __init__(self, db: Database, node_id: str) -> None:
        self._db = db
        self._node_id = node_id

    # -- inside the log's append ----------------------------------------------------------------

    def outbox(
        self, conn: psycopg.Connection, events: Sequence[LoggedEvent], _sources: Sequence[Activity] = ()
    ) -> None:
        """One pending delivery per (enabled webhook that wants it, event); in the append's transaction."""
        if events:
            conn.execute(
                _OUTBOX,
                (
                    time.time(),
                    [e.id for e in events],
                    [e.session_id for e in events],
                    [e.type for e in events],
                ),
            )

    # -- webhooks -------------------------------------------------------------------------------

    def create(self, webhook: StoredWebhook) -> None:
        self._db.run(
            lambda conn: conn.execute(
                f"INSERT INTO ws_webhooks ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", _row(webhook)
            )
        )

    def count(self) -> int:
        return self._db.run(
            lambda conn: conn.execute("SELECT count(*) FROM ws_webhooks WHERE source = 'api'").fetchone()[0]
        )

    def sync_config(self, configured: Sequence[StoredWebhook]) -> list[str]:
        """Make the config file's webhooks the enabled 'config' rows; returns the ids disabled.

        Every node runs this at start with its config file: the nodes must share one."""

        def sync(conn: psycopg.Connection) -> list[str]:
            for webhook in configured:
                conn.execute(
                    f"INSERT INTO ws_webhooks ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (id) DO UPDATE SET events = EXCLUDED.events, secret = EXCLUDED.secret,"
                    " source = 'config', enabled = true",
                    _row(webhook),
                )
            gone = conn.execute(
                "UPDATE ws_webhooks SET enabled = false"
                " WHERE source = 'config' AND enabled AND NOT (id = ANY (%s)) RETURNING id",
                ([w.id for w in configured],),
            ).fetchall()
            return sorted(row[0] for row in gone)

        return self._db.run(sync)

    def enabled(self, session_id: str | None = None) -> list[StoredWebhook]:
        """Enabled webhooks, oldest first; with `session_id`, only those filtered to that session."""
        sql = f"SELECT {_COLUMNS} FROM ws_webhooks WHERE enabled"
        args: list[object] = []
        if session_id is not None:
            sql += " AND session_id = %s"
            args.append(session_id)
        rows = self._db.run(lambda conn: conn.execute(sql + " ORDER BY created_at, id", args).fetchall())
        return [_webhook(row) for row in rows]

    def get(self, webhook_id: str) -> StoredWebhook | None:
        row = self._db.run(
            lambda conn: conn.execute(
                f"SELECT {_COLUMNS} FROM ws_webhooks WHERE id = %s AND enabled", (webhook_id,)
            ).fetchone()
        )
        return _webhook(row) if row else None

    def delete(self, webhook_id: str) -> bool:
        def delete(conn: psycopg.Connection) -> bool:
            gone = conn.execute("DELETE FROM ws_webhooks WHERE id = %s", (webhook_id,)).rowcount
            conn.execute("DELETE FROM ws_deliveries WHERE webhook_id = %s", (webhook_id,))
            conn.execute("DELETE FROM ws_webhook_lanes WHERE webhook_id = %s", (webhook_id,))
            return gone > 0

        return self._db.run(delete)

    # -- deliveries -----------------------------------------------------------------------------

    def deliveries(
        self, webhook_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[list[Delivery], int]:
        """A page of a webhook's deliveries, newest event first, and how many match."""
        where = "d.webhook_id = %s"
        args: list[object] = [webhook_id]
        if status is not None:
            where += " AND d.status = %s"
            args.append(status)

        def page(conn: psycopg.Connection) -> tuple[list[tuple], int]:
            (total,) = conn.execute(f"SELECT count(*) FROM ws_deliveries d WHERE {where}", args).fetchone()
            rows = conn.execute(
                "SELECT d.event_id, e.type, d.session_id, d.status, d.attempts, d.next_attempt_at,"
                " d.last_status_code, d.last_error, d.updated_at"
                f" FROM ws_deliveries d LEFT JOIN ws_events e ON e.id = d.event_id WHERE {where}"
                " ORDER BY d.event_id DESC LIMIT %s OFFSET %s",
                [*args, limit, offset],
            ).fetchall()
            return rows, total

        rows, total = self._db.run(page)
        return [delivery_from_row(r) for r in rows], total

    def redeliver(self, webhook_id: str, event_id: int | None) -> int:
        """Dead deliveries (or the one of `event_id`, whatever its status) back to pending, due now."""
        sql = (
            "UPDATE ws_deliveries SET status = 'pending', attempts = 0, first_attempt_at = NULL,"
            " next_attempt_at = 0, updated_at = %s WHERE webhook_id = %s"
        )
        args: list[object] = [time.time(), webhook_id]
        if event_id is None:
            sql += " AND status = 'dead'"
        else:
            sql += " AND event_id = %s"
            args.append(event_id)

        def redeliver(conn: psycopg.Connection) -> int:
            count = conn.execute(sql, args).rowcount
            if count:  # the node delivering a lane re-reads it now, even mid-wait (cluster/events.py)
                conn.execute("SELECT pg_notify(%s, %s)", (POKES, webhook_id))
            return count

        return self._db.run(redeliver)

    def lanes_with_work(
        self, webhook_id: str | None = None, events: tuple[int, int] | None = None
    ) -> list[tuple[str, str]]:
        """(webhook, session) pairs with open deliveries that no other live node holds: all, one
        webhook's, or those of events in the id range (after, upto]."""
        sql = (
            "SELECT DISTINCT d.webhook_id, d.session_id"
            " FROM ws_deliveries d JOIN ws_webhooks w ON w.id = d.webhook_id"
            " WHERE w.enabled AND d.status IN ('pending', 'failed')"
            " AND NOT EXISTS (SELECT 1 FROM ws_webhook_lanes l WHERE l.webhook_id = d.webhook_id"
            " AND l.session_id = d.session_id AND l.node <> %s AND l.until > now())"
        )
        args: list[object] = [self._node_id]
        if webhook_id is not None:
            sql += " AND d.webhook_id = %s"
            args.append(webhook_id)
        if events is not None:
            sql += " AND d.event_id > %s AND d.event_id <= %s"
            args.extend(events)
        return [(w, s) for w, s in self._db.run(lambda conn: conn.execute(sql, args).fetchall())]

    def due(self, webhook_id: str, session_id: str, limit: int) -> list[Due]:
        """A lane's oldest open deliveries with their events, in log order."""
        rows = self._db.run(
            lambda conn: conn.execute(
                "SELECT e.id, e.type, e.session_id, e.timestamp, e.data,"
                " d.attempts, d.first_attempt_at, d.next_attempt_at"
                " FROM ws_deliveries d JOIN ws_events e ON e.id = d.event_id"
                " WHERE d.webhook_id = %s AND d.session_id = %s AND d.status IN ('pending', 'failed')"
                " ORDER BY d.event_id LIMIT %s",
                (webhook_id, session_id, limit),
            ).fetchall()
        )
        return [due_from_row(row) for row in rows]

    def record(self, results: Sequence[DeliveryResult]) -> None:
        """Attempts' outcomes, in one transaction."""
        now = time.time()
        self._db.run(
            lambda conn: conn.cursor().executemany(
                "UPDATE ws_deliveries SET status = %s, attempts = attempts + 1,"
                " first_attempt_at = COALESCE(first_attempt_at, %s), next_attempt_at = %s,"
                " last_status_code = %s, last_error = %s, updated_at = %s"
                " WHERE webhook_id = %s AND event_id = %s AND status IN ('pending', 'failed')",
                result_params(results, now),
            )
        )

    def prune(self, limit: int = 10_000) -> int:
        """Delete up to `limit` deliveries whose event the log has pruned (same retention)."""
        return self._db.run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM ws_deliveries WHERE (webhook_id, event_id) IN"
                    " (SELECT webhook_id, event_id FROM ws_deliveries WHERE event_id <"
                    " COALESCE((SELECT min(id) FROM ws_events), (SELECT last_id + 1 FROM ws_event_head))"
                    " LIMIT %s)",
                    (limit,),
                ).rowcount
            )
        )


def _row(w: StoredWebhook) -> tuple[object, ...]:
    return (w.id, w.url, list(w.events), w.session_id, w.secret, w.created_at, w.source, w.enabled)


def _webhook(row: tuple) -> StoredWebhook:
    id_, url, events, session_id, secret, created_at, source, enabled = row
    return StoredWebhook(id_, url, tuple(events), session_id, secret, created_at, source, enabled)
