"""Which node delivers a webhook lane: a lease per (webhook, session) in `ws_webhook_lanes`.

Every node's dispatcher hears of every event, so several would start the same lane. Before it reads
a lane's deliveries and before each attempt, a dispatcher holds the lane: it takes the row if nobody
has it or its lease has run out (by the server's clock), or extends it if it is its own. The lanes a
dispatcher runs are renewed every `interval` seconds, so a lane waiting hours for a retry stays with
its node; a node that dies leaves its lanes to the others once `ttl` has passed. So one node at a
time delivers a lane, in order; the one delivery that can go twice is an attempt in flight when its
node died, unrecorded: it is sent again, under the same webhook-id (at least once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import psycopg

from ..errors import StorageFailed
from .eventstore import PgEventStore

__all__ = ["PgLaneClaims"]

log = logging.getLogger("waservice.cluster.webhooks")
T = TypeVar("T")

LaneKey = tuple[str, str]  # (webhook id, session id)

TTL = 30.0  # seconds a lane stays with a node that stopped renewing it


def _hold(conn: psycopg.Connection, node: str, ttl: float, webhook_id: str, session_id: str) -> bool:
    # A racing claim waits for the other's commit, then sees its live lease and takes nothing.
    row = conn.execute(
        "INSERT INTO ws_webhook_lanes (webhook_id, session_id, node, until)"
        " VALUES (%s, %s, %s, now() + make_interval(secs => %s))"
        " ON CONFLICT (webhook_id, session_id) DO UPDATE SET node = EXCLUDED.node, until = EXCLUDED.until"
        " WHERE ws_webhook_lanes.node = EXCLUDED.node OR ws_webhook_lanes.until <= now()"
        " RETURNING 1",
        (webhook_id, session_id, node, ttl),
    ).fetchone()
    return row is not None


def _renew(conn: psycopg.Connection, node: str, ttl: float, lanes: Sequence[LaneKey]) -> set[LaneKey]:
    rows = conn.execute(
        "UPDATE ws_webhook_lanes l SET until = now() + make_interval(secs => %s)"
        " FROM unnest(%s::text[], %s::text[]) AS k (webhook_id, session_id)"
        " WHERE l.webhook_id = k.webhook_id AND l.session_id = k.session_id AND l.node = %s"
        " RETURNING l.webhook_id, l.session_id",
        (ttl, [w for w, _ in lanes], [s for _, s in lanes], node),
    ).fetchall()
    return {(w, s) for w, s in rows}


def _release_all(conn: psycopg.Connection, node: str) -> int:
    return conn.execute("DELETE FROM ws_webhook_lanes WHERE node = %s", (node,)).rowcount


class PgLaneClaims:
    """The `LaneClaims` of webhooks/dispatcher.py for a node of a cluster."""

    def __init__(self, store: PgEventStore, node_id: str, ttl: float = TTL) -> None:
        self._store = store
        self.node_id = node_id
        self.ttl = ttl

    @property
    def interval(self) -> float:
        """How often the dispatcher renews its lanes and looks for lanes left by others."""
        return self.ttl / 3

    async def hold(self, webhook_id: str, session_id: str) -> bool:
        """Take or extend the lane; False if another node holds it, or if the database cannot say
        (then nobody may be sure of it: wait for the next look)."""
        try:
            return await self._call(_hold, self.node_id, self.ttl, webhook_id, session_id)
        except StorageFailed as exc:
            log.warning("cannot hold webhook lane %s/%s: %s", webhook_id, session_id, exc)
            return False

    async def renew(self, lanes: Sequence[LaneKey]) -> set[LaneKey] | None:
        """Extend the lanes this node runs; returns those still its own, or None if the database
        could not be reached (the lanes keep their lease until it runs out)."""
        if not lanes:
            return set()
        try:
            return await self._call(_renew, self.node_id, self.ttl, list(lanes))
        except StorageFailed as exc:
            log.warning("cannot renew %d webhook lane(s): %s", len(lanes), exc)
            return None

    async def release_all(self) -> int:
        """This node is leaving: the others may take its lanes now rather than after `ttl`."""
        return await self._call(_release_all, self.node_id)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        # On the event store's threads: with the dispatcher's reads, never more than its pool.
        return await self._store.call(self._store.connection.run, fn, *args)
