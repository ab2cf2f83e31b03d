"""`store.EventStore`'s interface on PostgreSQL: the event log and the tables beside it, for a cluster.

The recorder, the live stream, the webhook service and dispatcher and the message index use it as
they use the SQLite one. `call(fn, *args)` runs ``fn(*args)`` in a worker thread; the PostgreSQL
tables (cluster/webhooks.py, cluster/messages.py) take a pooled connection inside each method, so
`connection` is the `Database` they are built with. The store has a pool of its own: a burst of
events or a busy dispatcher never makes the node's lease renewal wait for a connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from ..errors import StorageFailed
from ..store import EventStore
from .database import Database, DatabaseError
from .eventlog import PgEventLog

__all__ = ["PgEventStore", "open_pg_event_store"]

T = TypeVar("T")


@asynccontextmanager
async def open_pg_event_store(url: str, size: int = 4) -> AsyncIterator[PgEventStore]:
    """The cluster's event log on a pool of `size` connections (at least 2: one for appends).
    The schema must be migrated already (cluster.service.open_cluster does it)."""
    async with Database.open(url, size=max(2, size)) as db:
        yield PgEventStore(PgEventLog(db))


class PgEventStore(EventStore):
    """Appends one at a time on one connection (they take turns cluster-wide anyway); everything
    else on the rest of the pool, so reads never queue behind an append."""

    def __init__(self, log: PgEventLog) -> None:
        super().__init__(log, readers=max(1, log.db.size - 1))  # type: ignore[arg-type]

    @property
    def connection(self) -> Database:  # type: ignore[override]
        """What the PostgreSQL tables are built with (`PgWebhookTables(store.connection, node_id)`)."""
        return self._log.connection  # type: ignore[return-value]

    async def _in_thread(
        self, fn: Callable[..., T], args: tuple[object, ...], limiter: trio.CapacityLimiter
    ) -> T:
        # A ServiceError as SQLite's are: callers retry (recorder, dispatcher) or answer 503, never 500.
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
        except DatabaseError as exc:
            raise StorageFailed(f"the database refused a change: {exc}") from exc
