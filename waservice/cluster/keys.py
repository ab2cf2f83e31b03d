"""Per-session API keys on PostgreSQL, known to every node (issue 10).

A load balancer may send any request to any node, which checks its key before forwarding it to the
session's owner: so every node keeps all the keys in memory, as store/keys.py does on one box, and
checking one costs no I/O. The keys, their format and their check are store/keys.py's; only where
the rows live differs: `ws_session_keys` (migration 3), whose trigger NOTIFYs every change in the
transaction that makes it, cascades from a deleted session included. Each node's `run` reloads its
cache on those notifications, after a `Resync` (a lost connection may have hidden some), and every
30 s in case anything else slipped through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg
import trio

from ..errors import StorageFailed
from ..store.keys import NewKey, StoredKey, find_key, keys_of, new_key
from .database import Database, DatabaseError
from .notify import Listener

__all__ = ["CHANNEL", "ClusterKeys"]

log = logging.getLogger("waservice.cluster.keys")

CHANNEL = "ws_session_keys"  # the one migration 3's trigger notifies
RELOAD_EVERY = 30.0  # the safety net: a full reload even when nothing was heard
RETRY_AFTER = 1.0  # after a failed reload


def _load(conn: psycopg.Connection) -> dict[str, StoredKey]:
    rows = conn.execute("SELECT key_id, session_id, created_at, digest FROM ws_session_keys").fetchall()
    return {row[0]: StoredKey(row[0], row[1], row[2], bytes(row[3])) for row in rows}


def _insert(conn: psycopg.Connection, stored: StoredKey) -> bool:
    """Store the key if its session is registered, in one statement: a key never outlives its session."""
    try:
        with conn.transaction():  # a savepoint: the foreign key may still refuse it, below
            cursor = conn.execute(
                "INSERT INTO ws_session_keys (key_id, session_id, digest, created_at)"
                " SELECT %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM ws_sessions WHERE id = %s)",
                (stored.key_id, stored.session_id, stored.digest, stored.created_at, stored.session_id),
            )
    except psycopg.errors.ForeignKeyViolation:
        return False  # the session was deleted between the EXISTS and the insert
    return cursor.rowcount > 0


def _delete(conn: psycopg.Connection, session_id: str, key_id: str) -> bool:
    cursor = conn.execute(
        "DELETE FROM ws_session_keys WHERE key_id = %s AND session_id = %s", (key_id, session_id)
    )
    return cursor.rowcount > 0


class ClusterKeys:
    """The keys of every session, in PostgreSQL and cached here; `KeyTable`'s behaviour, async."""

    def __init__(self, database: Database, by_id: dict[str, StoredKey]) -> None:
        self._database = database
        # Replaced whole, never changed in place; read by `check` on every request.
        self._by_id = by_id
        self._writes = 0  # changes this node made to its cache without a reload

    @classmethod
    async def open(cls, database: Database) -> ClusterKeys:
        """The keys as they are now. Raises DatabaseError (DatabaseUnavailable) if they cannot be read."""
        return cls(database, await database.call(_load))

    async def create(self, session_id: str) -> NewKey | None:
        """A new key for the session; None if the session is not registered. Raises StorageFailed."""
        new = new_key(session_id)
        if not await self._call_for_route(_insert, new.stored):
            return None
        self._update({**self._by_id, new.stored.key_id: new.stored})  # valid here at once
        return new

    def list(self, session_id: str) -> list[StoredKey]:
        return keys_of(self._by_id, session_id)

    async def delete(self, session_id: str, key_id: str) -> bool:
        """False if the session has no such key. Raises StorageFailed."""
        deleted = await self._call_for_route(_delete, session_id, key_id)
        self._update({k: v for k, v in self._by_id.items() if k != key_id or v.session_id != session_id})
        return deleted

    def forget_session(self, session_id: str) -> None:
        """Refuse the keys of a session just deleted here (the database cascades; this spares the wait
        for the notification). No I/O."""
        self._update({k: v for k, v in self._by_id.items() if v.session_id != session_id})

    def check(self, key: str) -> StoredKey | None:
        """The stored key `key` is, or None. No I/O: safe on the trio thread."""
        return find_key(self._by_id, key)

    async def reload(self) -> None:
        """Read every key again. Raises DatabaseError."""
        while True:
            writes = self._writes
            loaded = await self._database.call(_load)
            # A change made here while the rows were read may be missing from them: read again.
            if writes == self._writes:
                self._by_id = loaded
                return

    async def run(
        self,
        listener: Listener,
        *,
        reload_every: float = RELOAD_EVERY,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Follow the other nodes' changes until cancelled (`listener` must be running, or started
        too). Ready once the cache is loaded with the LISTEN in place, so that nothing is missed."""
        changes = listener.subscribe(CHANNEL)
        async with changes:
            await changes.receive()  # a Resync, once listening
            ready = False
            while True:
                try:
                    await self.reload()
                except DatabaseError as error:
                    log.warning("could not reload the session keys, retrying: %s", error)
                    wait = RETRY_AFTER
                else:
                    wait = reload_every
                    if not ready:
                        task_status.started()
                        ready = True
                with trio.move_on_after(wait):
                    await changes.receive()
                    _drain(changes)  # a burst of changes, one reload

    def _update(self, by_id: dict[str, StoredKey]) -> None:
        self._by_id = by_id
        self._writes += 1

    async def _call_for_route(self, fn: Callable[..., bool], *args: object) -> bool:
        try:
            return await self._database.call(fn, *args)
        except DatabaseError as error:
            raise StorageFailed(f"the database refused a change: {error}") from error


def _drain(channel: trio.MemoryReceiveChannel[object]) -> None:
    while True:
        try:
            channel.receive_nowait()
        except trio.WouldBlock:
            return
