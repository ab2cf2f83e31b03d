"""`store.EventStore`'s interface on PostgreSQL: the event log and the tables beside it, for a cluster.

The recorder, the live stream, the webhook service and dispatcher and the message index use it as
they use the SQLite one. `call(fn, *args)` runs ``fn(*args)`` in a worker thread; the PostgreSQL
tables (cluster/webhooks.py, cluster/messages.py) take a pooled connection inside each method, so
`connection` is the `Database` they are built with. The store has a pool of its own: a burst of
events or a busy dispatcher never makes the node's lease renewal wait for a connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from ..errors import StorageFailed
from ..events.model import Activity, LoggedEvent
from .database import Database, DatabaseError
from .eventlog import PgEventLog, PgOutbox

__all__ = ["PgEventStore", "open_pg_event_store"]

T = TypeVar("T")


@asynccontextmanager
async def open_pg_event_store(url: str, size: int = 4) -> AsyncIterator[PgEventStore]:
    """The cluster's event log on a pool of `size` connections (at least 2: one for appends).
    The schema must be migrated already (cluster.service.open_cluster does it)."""
    async with Database.open(url, size=max(2, size)) as db:
        yield PgEventStore(PgEventLog(db))


class PgEventStore:
    """Appends one at a time on one connection (they take turns cluster-wide anyway); everything
    else on the rest of the pool, so reads never queue behind an append."""

    def __init__(self, log: PgEventLog) -> None:
        self._log = log
        self._append_limiter = trio.CapacityLimiter(1)
        self._limiter = trio.CapacityLimiter(max(1, log.db.size - 1))

    def add_outbox(self, outbox: PgOutbox) -> None:
        """Run `outbox` inside every append's transaction, with its connection."""
        self._log.outboxes.append(outbox)

    async def append(self, batch: Iterable[Activity]) -> list[LoggedEvent]:
        return await self.append_call(self._log.append, list(batch))

    async def after(
        self, after_id: int, limit: int, session_id: str | None = None, types: Sequence[str] | None = None
    ) -> list[LoggedEvent]:
        return await self.call(self._log.after, after_id, limit, session_id, types)

    async def get(self, event_id: int) -> LoggedEvent | None:
        return await self.call(self._log.get, event_id)

    async def last_id(self) -> int:
        return await self.call(self._log.last_id)

    async def prune(self, before: float) -> int:
        return await self.append_call(self._log.prune, before)

    async def append_call(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking function on the appending share of the pool (appends and pruning)."""
        return await _in_thread(fn, args, self._append_limiter)

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in a worker thread: the tables' methods, which take their own connection."""
        return await _in_thread(fn, args, self._limiter)

    @property
    def connection(self) -> Database:
        """What the PostgreSQL tables are built with (`PgWebhookTables(store.connection, node_id)`)."""
        return self._log.connection


async def _in_thread(fn: Callable[..., T], args: tuple[object, ...], limiter: trio.CapacityLimiter) -> T:
    # A ServiceError as SQLite's are: callers retry (recorder, dispatcher) or answer 503, never 500.
    try:
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
    except DatabaseError as exc:
        raise StorageFailed(f"the database refused a change: {exc}") from exc
