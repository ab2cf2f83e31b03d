"""The cluster's session registry, as SQL on one connection (the PostgreSQL side of store/registry.py).

Which sessions exist, who owns each (leases.py fences the owner's writes with the epoch) and the state
the owner last wrote through, with the server's time of writing. Every function takes a psycopg
connection and runs in the caller's transaction (`Database.call`).
"""

from __future__ import annotations

from datetime import datetime

import attrs
import psycopg

from .leases import LeaseLost

# A node is live while its lease lasts (server time); only live, non-draining nodes take sessions.
_LIVE = "n.lease_until > now()"


class OwnedElsewhere(Exception):
    """Another live node owns the session: the request belongs there."""

    def __init__(self, session_id: str, owner: str) -> None:
        super().__init__(f"session {session_id!r} is owned by node {owner!r}")
        self.session_id = session_id
        self.owner = owner


@attrs.frozen
class SessionRow:
    id: str
    owner: str | None  # None: nobody, or a node whose lease ran out
    owner_url: str | None
    epoch: int
    autoconnect: bool
    down_reason: str | None
    jid: str | None
    state: str
    state_at: datetime
    created_at: datetime


@attrs.frozen
class NodeRow:
    node_id: str
    url: str
    live: bool
    draining: bool
    lease_until: datetime
    started_at: datetime
    sessions: int


_SESSION_COLUMNS = """
    s.id, CASE WHEN n.lease_until > now() THEN s.owner END, CASE WHEN n.lease_until > now() THEN n.url END,
    s.epoch, s.autoconnect, s.down_reason, s.jid, s.state, s.state_at, s.created_at
"""


def sessions(conn: psycopg.Connection) -> list[SessionRow]:
    rows = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM ws_sessions s LEFT JOIN ws_nodes n ON n.node_id = s.owner"
        " ORDER BY s.created_at, s.id"
    ).fetchall()
    return [SessionRow(*row) for row in rows]


def session(conn: psycopg.Connection, session_id: str) -> SessionRow | None:
    row = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM ws_sessions s LEFT JOIN ws_nodes n ON n.node_id = s.owner"
        " WHERE s.id = %s",
        (session_id,),
    ).fetchone()
    return None if row is None else SessionRow(*row)


def ensure(conn: psycopg.Connection, session_id: str) -> None:
    """Register the session, owned by nobody, unless it is (the `default` session always exists)."""
    conn.execute("INSERT INTO ws_sessions (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (session_id,))


@attrs.frozen
class Owned:
    epoch: int
    autoconnect: bool
    down_reason: str | None


def take(conn: psycopg.Connection, node_id: str, session_id: str, *, connect: bool) -> Owned | None:
    """Make the session this node's; returns it as owned, or None if there is no such session.

    Takes it if nobody live owns it (epoch + 1) and keeps the epoch if it is this node's already.
    `connect` (POST /connect): also creates it if new and sets it to start by itself. Raises
    OwnedElsewhere when another live node owns it.
    """
    params = {"id": session_id, "node": node_id, "connect": connect}
    if connect:
        conn.execute(
            "INSERT INTO ws_sessions (id, autoconnect) VALUES (%(id)s, true) ON CONFLICT (id) DO NOTHING",
            params,
        )
    row = conn.execute(
        """
        UPDATE ws_sessions s
        SET owner = %(node)s,
            epoch = s.epoch + CASE WHEN s.owner IS NOT DISTINCT FROM %(node)s THEN 0 ELSE 1 END,
            autoconnect = s.autoconnect OR %(connect)s,
            down_reason = CASE WHEN %(connect)s THEN NULL ELSE s.down_reason END,
            -- A new owner has not connected it yet: the former owner's last state is not its own.
            state = CASE WHEN s.owner IS NOT DISTINCT FROM %(node)s THEN s.state ELSE 'disconnected' END,
            state_at = CASE WHEN s.owner IS NOT DISTINCT FROM %(node)s THEN s.state_at ELSE now() END
        WHERE s.id = %(id)s AND (s.owner IS NULL OR s.owner = %(node)s OR NOT EXISTS (
            SELECT 1 FROM ws_nodes n WHERE n.node_id = s.owner AND n.lease_until > now()))
        RETURNING s.epoch, s.autoconnect, s.down_reason
        """,
        params,
    ).fetchone()
    if row is not None:
        return Owned(*row)
    owner = conn.execute("SELECT owner FROM ws_sessions WHERE id = %s", (session_id,)).fetchone()
    if owner is None:
        return None
    raise OwnedElsewhere(session_id, owner[0])


def set_autoconnect(
    conn: psycopg.Connection,
    node_id: str,
    session_id: str,
    epoch: int,
    autoconnect: bool,
    down_reason: str | None,
) -> None:
    """The owner's decision whether the session starts by itself, fenced (raises LeaseLost)."""
    cur = conn.execute(
        """
        UPDATE ws_sessions SET autoconnect = %(auto)s, down_reason = %(reason)s
        WHERE id = %(id)s AND owner = %(node)s AND epoch = %(epoch)s
          AND EXISTS (SELECT 1 FROM ws_nodes WHERE node_id = %(node)s AND lease_until > now())
        """,
        {
            "auto": autoconnect,
            "reason": None if autoconnect else down_reason,
            "id": session_id,
            "node": node_id,
            "epoch": epoch,
        },
    )
    if cur.rowcount != 1:
        raise LeaseLost(session_id, node_id, epoch)


def remove(conn: psycopg.Connection, node_id: str, session_id: str, epoch: int) -> None:
    """Delete the session's row (its keys go with it) and its WhatsApp device's rows, fenced like
    every owner's write."""
    row = conn.execute(
        "DELETE FROM ws_sessions WHERE id = %s AND owner = %s AND epoch = %s RETURNING jid",
        (session_id, node_id, epoch),
    ).fetchone()
    if row is None:
        raise LeaseLost(session_id, node_id, epoch)
    jid = row[0]
    has_devices = conn.execute("SELECT to_regclass('whatsmeow_device') IS NOT NULL").fetchone()[0]
    if jid and has_devices:  # whatsmeow's own tables follow by ON DELETE CASCADE
        conn.execute("DELETE FROM whatsmeow_device WHERE jid = %s", (jid,))


def write_states(conn: psycopg.Connection, node_id: str, states: dict[str, tuple[int, str]]) -> set[str]:
    """Write through the states of sessions this node owns (id -> (epoch, state)), stamped with the
    server's time; returns the ids whose write was refused (not this node's at that epoch)."""
    if not states:
        return set()
    ids = list(states)
    rows = conn.execute(
        """
        UPDATE ws_sessions s SET state = w.state, state_at = now()
        FROM unnest(%(ids)s::text[], %(epochs)s::bigint[], %(states)s::text[]) AS w(id, epoch, state)
        WHERE s.id = w.id AND s.owner = %(node)s AND s.epoch = w.epoch
        RETURNING s.id
        """,
        {
            "ids": ids,
            "epochs": [states[i][0] for i in ids],
            "states": [states[i][1] for i in ids],
            "node": node_id,
        },
    ).fetchall()
    return set(ids) - {row[0] for row in rows}


def owned(conn: psycopg.Connection, node_id: str) -> dict[str, Owned]:
    """The sessions the registry says this node owns."""
    rows = conn.execute(
        "SELECT id, epoch, autoconnect, down_reason FROM ws_sessions WHERE owner = %s", (node_id,)
    ).fetchall()
    return {row[0]: Owned(*row[1:]) for row in rows}


def fair_share(conn: psycopg.Connection, node_id: str) -> int:
    """How many more sessions this node should take: its even share of the autoconnect sessions over
    the live, non-draining nodes, less what it owns. Nodes take orphans up to their share, so the
    least-loaded take the most, and a node that comes back takes nothing back (no flapping)."""
    row = conn.execute(
        f"""
        SELECT
            (SELECT count(*) FROM ws_sessions WHERE autoconnect),
            (SELECT count(*) FROM ws_nodes n WHERE {_LIVE} AND NOT n.draining),
            (SELECT count(*) FROM ws_sessions WHERE owner = %s)
        """,
        (node_id,),
    ).fetchone()
    total, live, mine = row
    if live == 0:
        return 0
    return max(0, -(-total // live) - mine)


# Placements take turns, so each sees the ones before it: a burst of new sessions spreads out.
PLACEMENT_LOCK_KEY = 0x7761_706C_6163  # "waplac"


def place(conn: psycopg.Connection, session_id: str) -> NodeRow | None:
    """Register a new session on the least-loaded live node and return that node; the node already
    owning it if it exists; None if no node is live. The row counts at once, for the next placement."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PLACEMENT_LOCK_KEY,))
    existing = session(conn, session_id)
    target = least_loaded(conn) if existing is None else None
    if existing is None and target is not None:
        conn.execute(
            "INSERT INTO ws_sessions (id, owner, epoch, autoconnect) VALUES (%s, %s, 1, true)",
            (session_id, target.node_id),
        )
        return target
    if existing is None or existing.owner is None:
        return None
    return next((n for n in nodes(conn) if n.node_id == existing.owner), None)


def least_loaded(conn: psycopg.Connection) -> NodeRow | None:
    """The live, non-draining node owning the fewest sessions (where a new session goes)."""
    candidates = [n for n in nodes(conn) if n.live and not n.draining]
    return min(candidates, key=lambda n: (n.sessions, n.node_id), default=None)


def nodes(conn: psycopg.Connection) -> list[NodeRow]:
    rows = conn.execute(
        """
        SELECT n.node_id, n.url, n.lease_until > now(), n.draining, n.lease_until, n.started_at,
               (SELECT count(*) FROM ws_sessions s WHERE s.owner = n.node_id)
        FROM ws_nodes n ORDER BY n.node_id
        """
    ).fetchall()
    return [NodeRow(*row) for row in rows]


def start_node(conn: psycopg.Connection, node_id: str, url: str, ttl: float) -> None:
    """A node (re)starting: registered and live, not draining (a restart ends a drain)."""
    conn.execute(
        """
        INSERT INTO ws_nodes (node_id, url, lease_until)
        VALUES (%(node)s, %(url)s, now() + make_interval(secs => %(ttl)s))
        ON CONFLICT (node_id) DO UPDATE
            SET url = EXCLUDED.url, lease_until = EXCLUDED.lease_until, started_at = now(), draining = false
        """,
        {"node": node_id, "url": url, "ttl": ttl},
    )


def is_draining(conn: psycopg.Connection, node_id: str) -> bool:
    row = conn.execute("SELECT draining FROM ws_nodes WHERE node_id = %s", (node_id,)).fetchone()
    return bool(row and row[0])


def set_draining(conn: psycopg.Connection, node_id: str) -> bool:
    """Ask a node to hand its sessions over (it does so at its next renewal); False if no such node."""
    return conn.execute("UPDATE ws_nodes SET draining = true WHERE node_id = %s", (node_id,)).rowcount == 1
