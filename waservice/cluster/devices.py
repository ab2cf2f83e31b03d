"""whatsmeow's device store in the cluster's PostgreSQL: every account of every node in one schema.

goneonize opens PostgreSQL when the database name starts with "postgres" (facts-scale.md section 2),
and whatsmeow keeps all accounts in one set of tables keyed by the device JID. The session registry
(`ws_sessions.jid`) says which account is the session's, so any node can restore it with no QR.
Two of goneonize's hazards shape every answer here: a JID with no row in `whatsmeow_device` crashes
the worker (nil dereference), and neither a JID nor `new_device` logs in as the first account in the
store, someone else's. So a spec carries a JID only after checking its row, else `new_device`.
"""

from __future__ import annotations

import logging
import math
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psycopg
import trio

from ..engine.base import EngineError
from ..engine.device_jid import parse_device_jid
from ..engine.devices import DeviceSpec
from .database import Database, DatabaseError

log = logging.getLogger("waservice.cluster.devices")
T = TypeVar("T")
# Each connection attempt leaves its store open in Go with up to 2 server connections (measured:
# tests/cluster/test_device_connections.py): a worker past this many is recycled, which closes them.
STALE_STORES = 20
# How long starts on a store with no tables yet wait for the first one to create them.
FIRST_UPGRADE_WAIT = 15.0  # also how long a node's turn to create them lasts (ws_device_store_upgrade)


class PostgresDevices:
    """A `DeviceStore` on the cluster database `url` (the one `database` is connected to)."""

    def __init__(
        self, database: Database, url: str, node_id: str = "", *, max_stale_stores: int = STALE_STORES
    ) -> None:
        self._database = database
        self._node_id = node_id  # whose turn it is to create whatsmeow's tables, cluster-wide
        self._url = go_url(url)
        self.max_stale_stores = max_stale_stores
        # Pairings the registry has not recorded yet (the database was unreachable at that moment):
        # written at the session's next start, so the account is not lost with the failed write.
        self._unsaved: dict[str, str] = {}
        self._first_upgrade = trio.Lock()
        self._tables_made = False  # whatsmeow's tables exist (once seen, they stay)
        self._turn_until = -math.inf  # trio time this node's start that creates them has until

    async def spec(self, session_id: str, directory: Path) -> DeviceSpec:
        await self._after_first_upgrade()
        unsaved = self._unsaved.pop(session_id, None)
        try:
            jid = await self._call(_account, session_id, unsaved)
        except EngineError:
            if unsaved is not None:
                self._unsaved.setdefault(session_id, unsaved)
            raise
        if jid is None:
            return DeviceSpec(db=self._url, new_device=True)
        return DeviceSpec(db=self._url, jid=jid)

    async def has_credentials(self, session_id: str, directory: Path) -> bool:
        if session_id in self._unsaved:
            return True
        return await self._call(_account, session_id, None) is not None

    async def paired(self, session_id: str, jid: str) -> None:
        """Record the account in the registry; never raises (the session is connected either way):
        a failed write is kept and retried at the session's next start."""
        try:
            found = await self._call(_record, session_id, jid)
        except EngineError as exc:
            self._unsaved[session_id] = jid
            log.error("session=%s paired, but the registry could not record it yet: %s", session_id, exc)
            return
        if not found:  # the registry creates the row before a session starts: a bug if it is missing
            log.error("session=%s paired, but it has no registry row to record its account in", session_id)

    async def forget(self, session_id: str, directory: Path) -> None:
        unsaved = self._unsaved.pop(session_id, None)
        try:
            await self._call(_forget, session_id, unsaved)
        except EngineError as exc:
            if unsaved is not None:
                self._unsaved[session_id] = unsaved
            raise OSError(str(exc)) from None  # the supervisor's contract: forgetting raises OSError

    async def _after_first_upgrade(self) -> None:
        """whatsmeow creates its tables at every Neonize() that finds none, and two such at once
        collide (measured: 23505 on pg_type, the attempt fails). So while there are none, one start
        in the whole cluster goes through: this node's first, if it claims the turn (a row in
        ws_device_store_upgrade, for FIRST_UPGRADE_WAIT); every other start waits until the tables
        exist, or until that turn has passed (that start failed) and it may claim the next."""
        if self._tables_made:
            return
        async with self._first_upgrade:
            give_up = trio.current_time() + 2 * FIRST_UPGRADE_WAIT
            while not await self._tables_exist():
                now = trio.current_time()
                if now >= self._turn_until and await self._call(
                    _claim_upgrade, self._node_id, FIRST_UPGRADE_WAIT
                ):
                    self._turn_until = now + FIRST_UPGRADE_WAIT
                    return  # this start creates them; the next ones wait for it
                if now > give_up:
                    return  # no tables after two turns: let it try (a failure is retried anyway)
                await trio.sleep(0.2)

    async def _tables_exist(self) -> bool:
        self._tables_made = await self._call(_has_devices_table)
        return self._tables_made

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        """The query's result, or an EngineError (a supervisor retries it with its backoff)."""
        try:
            return await self._database.call(fn, *args)
        except DatabaseError as exc:
            raise EngineError(f"device store: {exc}") from None


def go_url(url: str) -> str:
    """The database URL as the workers hand it to goneonize (lib/pq, Go's net/url).

    Only a URL will do: goneonize opens anything not starting with "postgres" as a SQLite file. The
    user and password are percent-encoded afresh: libpq takes characters Go's parser refuses (a
    "[" in a password), and Go's parse error would quote the whole URL, password included. And
    lib/pq's default is `sslmode=require` where libpq's (psycopg's) is `prefer`: without it, a
    server the service itself reaches without TLS would refuse every device. Never raises with any
    part of the URL in its message (urllib's errors quote pieces of it)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql"):
        raise ValueError("the database URL must start with postgresql:// (the device store needs a URL)")
    ends = [i for i in (rest.find("/"), rest.find("?")) if i >= 0]
    authority, tail = rest[: min(ends, default=len(rest))], rest[min(ends, default=len(rest)) :]
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        userinfo = _encoded(user) + (f":{_encoded(password)}" if colon else "")
        authority = f"{userinfo}@{host}"
    path, _, query = tail.partition("?")
    if "sslmode" not in urllib.parse.parse_qs(query):
        query = f"{query}&sslmode=prefer" if query else "sslmode=prefer"
    return f"{scheme}://{authority}{path}?{query}"


def _encoded(part: str) -> str:
    return urllib.parse.quote(urllib.parse.unquote(part), safe="")


# -- SQL (each runs in one transaction on a database thread) ------------------------------------


def _account(conn: psycopg.Connection, session_id: str, unsaved: str | None) -> str | None:
    """The session's account JID if whatsmeow has its device, else None (pair a new one)."""
    if unsaved is not None:
        _record(conn, session_id, unsaved)
    row = conn.execute("SELECT jid FROM ws_sessions WHERE id = %s", (session_id,)).fetchone()
    jid = row[0] if row is not None else None
    if jid is None:
        return None
    try:
        parse_device_jid(jid)
    except ValueError:
        log.error(
            "session=%s: the registry's JID %r is not a device JID: pairing a new device", session_id, jid
        )
        return None
    if not _has_device(conn, jid):
        log.warning(
            "session=%s: account %s is not in the device store: pairing a new device", session_id, jid
        )
        return None
    return jid


def _claim_upgrade(conn: psycopg.Connection, node_id: str, seconds: float) -> bool:
    """This node's turn to let a start create whatsmeow's tables, unless another node's is running."""
    row = conn.execute(
        """
        INSERT INTO ws_device_store_upgrade AS u (id, node, until)
        VALUES (1, %(node)s, now() + make_interval(secs => %(secs)s))
        ON CONFLICT (id) DO UPDATE SET node = EXCLUDED.node, until = EXCLUDED.until
            WHERE u.until < now()
        RETURNING node
        """,
        {"node": node_id, "secs": seconds},
    ).fetchone()
    return row is not None


def _has_devices_table(conn: psycopg.Connection) -> bool:
    """whatsmeow creates its tables at its first connection: before that, no table is no device."""
    return conn.execute("SELECT to_regclass('whatsmeow_device')").fetchone()[0] is not None


def _has_device(conn: psycopg.Connection, jid: str) -> bool:
    if not _has_devices_table(conn):
        return False
    return conn.execute("SELECT 1 FROM whatsmeow_device WHERE jid = %s", (jid,)).fetchone() is not None


def _record(conn: psycopg.Connection, session_id: str, jid: str) -> bool:
    return conn.execute("UPDATE ws_sessions SET jid = %s WHERE id = %s", (jid, session_id)).rowcount > 0


def _forget(conn: psycopg.Connection, session_id: str, unsaved: str | None) -> None:
    row = conn.execute("SELECT jid FROM ws_sessions WHERE id = %s FOR UPDATE", (session_id,)).fetchone()
    jids = [jid for jid in {row[0] if row is not None else None, unsaved} if jid is not None]
    if jids and _has_devices_table(conn):
        # whatsmeow's other tables reference the device ON DELETE CASCADE (measured: 12 of them).
        conn.execute("DELETE FROM whatsmeow_device WHERE jid = ANY(%s)", (jids,))
    conn.execute("UPDATE ws_sessions SET jid = NULL WHERE id = %s", (session_id,))
