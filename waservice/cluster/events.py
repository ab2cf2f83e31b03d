"""A cluster node's event machinery, put together: what server.py uses instead of waservice.db's.

The event log, webhook deliveries and the message index live in PostgreSQL (`open_events`, on a pool
of its own); the hub hears of every node's events through the log follower, woken by the cluster's
listener; webhook lanes are claimed so that one node at a time delivers each.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from ..config import Config
from ..errors import StorageFailed
from ..events.hub import EventHub
from ..webhooks.dispatcher import Dispatcher
from .database import DatabaseError
from .eventlog import CHANNEL
from .eventstore import PgEventStore, open_pg_event_store
from .follower import POLL_INTERVAL, LogFollower
from .lanes import TTL, PgLaneClaims
from .messages import PgMessageTable
from .notify import Listener, Notification
from .webhooks import POKES, PgWebhookTables

__all__ = ["ClusterEvents", "open_events"]

log = logging.getLogger("waservice.cluster.events")


@asynccontextmanager
async def open_events(config: Config) -> AsyncIterator[PgEventStore]:
    """The cluster's event log (migrated by open_cluster), on `database.pool_size` connections of its
    own: a burst of events never delays a lease renewal. Raises OSError if it cannot connect."""
    async with AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(
                open_pg_event_store(config.database.url, config.database.pool_size)
            )
        except DatabaseError as exc:  # OSError: "cannot start", exit code 1
            raise OSError(f"cannot use the cluster database for events: {exc}") from None
        yield store


class ClusterEvents:
    def __init__(
        self,
        store: PgEventStore,
        hub: EventHub,
        node_id: str,
        listener: Listener,
        *,
        poll_interval: float = POLL_INTERVAL,
        lane_ttl: float = TTL,
    ) -> None:
        # The recorder publishes to the follower, not to the hub: it puts every node's events in order.
        self.follower = LogFollower(store, hub, poll_interval=poll_interval)
        self.webhook_tables = PgWebhookTables(store.connection, node_id)
        self.claims = PgLaneClaims(store, node_id, lane_ttl)
        self.message_table = PgMessageTable
        self._notices = listener.subscribe(CHANNEL)  # the other nodes' appends
        self._pokes = listener.subscribe(POKES)

    async def follow(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.follower.run(self._notices, task_status=task_status)

    async def relay_pokes(self, dispatcher: Dispatcher) -> None:
        """A redeliver on any node reaches the lanes this node delivers, even those waiting for a
        retry (the node that answered the request pokes only its own)."""
        async with self._pokes:
            async for message in self._pokes:
                if isinstance(message, Notification):
                    await dispatcher.poke(message.payload)

    async def leave(self) -> None:
        """Once this node's dispatcher has stopped: its lanes go to the others now, not at claim end."""
        with trio.CancelScope(shield=True):
            try:
                await self.claims.release_all()
            except StorageFailed as exc:
                log.warning(
                    "webhook lanes not released (the others take them in %g s): %s", self.claims.ttl, exc
                )
