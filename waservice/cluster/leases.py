"""Session leases with fencing, as SQL on one connection (facts-scale.md section 5).

A node owns its sessions for as long as its own row in `ws_nodes` is live (`lease_until` in the
future, by the server's clock: node clocks are never compared). Each change of owner adds one to the
session's `epoch`; writes an owner makes about a session carry (owner, epoch), so a node that lost a
session without noticing changes nothing, and is told so by `LeaseLost`.

Every function takes a psycopg connection and runs in the caller's transaction (`Database.call`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql


class LeaseLost(Exception):
    """A fenced write by a node that no longer owns the session at that epoch: nothing was written."""

    def __init__(self, session_id: str, node_id: str, epoch: int) -> None:
        super().__init__(f"session {session_id!r} is no longer owned by {node_id!r} at epoch {epoch}")
        self.session_id = session_id
        self.node_id = node_id
        self.epoch = epoch


@dataclass(frozen=True, order=True)
class Claim:
    session_id: str
    epoch: int


def heartbeat(conn: psycopg.Connection, node_id: str, url: str, ttl: float) -> datetime:
    """Register the node or extend its lease to the server's now() + ttl seconds; returns the new end."""
    row = conn.execute(
        """
        INSERT INTO ws_nodes (node_id, url, lease_until)
        VALUES (%(node)s, %(url)s, now() + make_interval(secs => %(ttl)s))
        ON CONFLICT (node_id) DO UPDATE SET lease_until = EXCLUDED.lease_until, url = EXCLUDED.url
        RETURNING lease_until
        """,
        {"node": node_id, "url": url, "ttl": ttl},
    ).fetchone()
    return row[0]


def add_session(conn: psycopg.Connection, session_id: str, *, autoconnect: bool = True) -> bool:
    """Register a session with no owner (the next claim takes it); False if it already exists."""
    cur = conn.execute(
        "INSERT INTO ws_sessions (id, autoconnect) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
        (session_id, autoconnect),
    )
    return cur.rowcount == 1


def claim(conn: psycopg.Connection, node_id: str, limit: int) -> list[Claim]:
    """Take up to ``limit`` autoconnect sessions whose owner is missing or not live, each at epoch + 1.

    Only a live, non-draining node claims. Rows another node is claiming right now are skipped, not
    waited for; a row another claimer has just committed is re-checked against its new owner, who is
    live, so the same session is never taken twice (tests/cluster/test_leases.py races this).
    """
    rows = conn.execute(
        """
        WITH orphan AS (
            SELECT s.id FROM ws_sessions s
            WHERE s.autoconnect
              AND (s.owner IS NULL OR NOT EXISTS (
                    SELECT 1 FROM ws_nodes n WHERE n.node_id = s.owner AND n.lease_until > now()))
              AND EXISTS (
                    SELECT 1 FROM ws_nodes me
                    WHERE me.node_id = %(node)s AND me.lease_until > now() AND NOT me.draining)
            ORDER BY s.id
            LIMIT %(limit)s
            FOR UPDATE OF s SKIP LOCKED
        )
        UPDATE ws_sessions s
        SET owner = %(node)s, epoch = s.epoch + 1, state = 'disconnected', state_at = now()
        FROM orphan WHERE s.id = orphan.id
        RETURNING s.id, s.epoch
        """,
        {"node": node_id, "limit": limit},
    ).fetchall()
    return sorted(Claim(session_id, epoch) for session_id, epoch in rows)


def still_mine(conn: psycopg.Connection, node_id: str, session_id: str, epoch: int) -> bool:
    """Whether the node still owns the session at that epoch, with its own lease live."""
    row = conn.execute(
        """
        SELECT s.owner = %(node)s AND s.epoch = %(epoch)s AND n.lease_until > now()
        FROM ws_sessions s JOIN ws_nodes n ON n.node_id = s.owner
        WHERE s.id = %(session)s
        """,
        {"node": node_id, "epoch": epoch, "session": session_id},
    ).fetchone()
    return bool(row and row[0])


def renew(conn: psycopg.Connection, node_id: str, url: str, ttl: float, held: Mapping[str, int]) -> set[str]:
    """Heartbeat, then report which of ``held`` (session id -> epoch) are still this node's.

    A session missing from the answer was taken over (or deleted): its client must stop.
    """
    heartbeat(conn, node_id, url, ttl)
    if not held:
        return set()
    ids = list(held)
    rows = conn.execute(
        """
        SELECT s.id FROM ws_sessions s
        JOIN unnest(%(ids)s::text[], %(epochs)s::bigint[]) AS h(id, epoch) ON h.id = s.id
        WHERE s.owner = %(node)s AND s.epoch = h.epoch
        """,
        {"ids": ids, "epochs": [held[i] for i in ids], "node": node_id},
    ).fetchall()
    return {row[0] for row in rows}


def release(conn: psycopg.Connection, node_id: str, session_ids: list[str] | None = None) -> set[str]:
    """Give sessions up (all of this node's, or the ones named) so another node claims them at once."""
    rows = conn.execute(
        """
        UPDATE ws_sessions SET owner = NULL
        WHERE owner = %(node)s AND (%(ids)s::text[] IS NULL OR id = ANY(%(ids)s::text[]))
        RETURNING id
        """,
        {"node": node_id, "ids": session_ids},
    ).fetchall()
    return {row[0] for row in rows}


def drain(conn: psycopg.Connection, node_id: str) -> set[str]:
    """Stop the node claiming anything and release everything it owns; it stays registered and live."""
    conn.execute("UPDATE ws_nodes SET draining = true WHERE node_id = %s", (node_id,))
    return release(conn, node_id)


# Columns an owner writes through to the registry; `state` also stamps `state_at` with server time.
FENCED_COLUMNS = frozenset({"state", "jid", "autoconnect"})


def fenced_update(
    conn: psycopg.Connection, node_id: str, session_id: str, epoch: int, **values: object
) -> None:
    """Write ``values`` if this node owns the session at ``epoch``, lease live; else raise `LeaseLost`."""
    unknown = set(values) - FENCED_COLUMNS
    if unknown or not values:
        raise ValueError(f"fenced_update writes some of {sorted(FENCED_COLUMNS)}, got {sorted(values)}")
    assignments = [sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in sorted(values)]
    if "state" in values:
        assignments.append(sql.SQL("state_at = now()"))
    query = sql.SQL(
        "UPDATE ws_sessions SET {} WHERE id = %(_session)s AND owner = %(_node)s AND epoch = %(_epoch)s"
        " AND EXISTS (SELECT 1 FROM ws_nodes WHERE node_id = %(_node)s AND lease_until > now())"
    ).format(sql.SQL(", ").join(assignments))
    cur = conn.execute(query, {**values, "_session": session_id, "_node": node_id, "_epoch": epoch})
    if cur.rowcount != 1:
        raise LeaseLost(session_id, node_id, epoch)
