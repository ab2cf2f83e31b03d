"""A node of a cluster, put together: the database, this node's lease and the shared session store.

server.py opens it when `database.url` is set, instead of the SQLite session store.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import attrs
import trio

from ..api.idempotency import IdempotencyKeys
from ..config import Config
from ..events.hub import EventHub
from .database import Database, DatabaseError
from .devices import PostgresDevices
from .events import ClusterEvents
from .eventstore import PgEventStore
from .forward import Forwarding
from .idempotency import PostgresIdempotencyTable
from .keys import ClusterKeys
from .locator import ClusterLocator
from .migrations import SchemaTooNew, migrate
from .node import ClusterNode
from .notify import Listener
from .store import ClusterSessionStore


@attrs.frozen
class Cluster:
    db: Database
    node: ClusterNode
    store: ClusterSessionStore
    locator: ClusterLocator
    keys: ClusterKeys
    listener: Listener  # NOTIFY from the other nodes (key changes, new events)
    config: Config = attrs.field(repr=False)  # database.url holds a password

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the other nodes' changes; ready once this node sees them."""
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(self.listener.run)
            except DatabaseError as exc:
                raise OSError(f"cannot use the cluster database: {exc}") from None
            await nursery.start(self.keys.run, self.listener)
            task_status.started()

    def devices(self) -> PostgresDevices:
        """whatsmeow's device keys in this database, where any node finds them after a takeover."""
        return PostgresDevices(self.db, self.config.database.url, self.node.node_id)

    def events(self, store: PgEventStore, hub: EventHub) -> ClusterEvents:
        """Every node's events in this node's hub, in id order; webhook lanes claimed cluster-wide."""
        return ClusterEvents(store, hub, self.node.node_id, self.listener)

    def forwarding(self) -> Forwarding:
        """Requests for sessions other nodes own go to them (cluster/forward.py)."""
        return Forwarding(
            self.locator,
            self.node.node_id,
            timeout=self.config.cluster.forward_timeout,
            # Idle connections to other nodes close before those nodes close them (their keep-alive).
            idle_expiry=0.8 * self.config.server.keep_alive_timeout,
        )

    def idempotency(self) -> IdempotencyKeys:
        """Idempotency-Key answers every node sees (a retry after a failover is still answered)."""
        return IdempotencyKeys(PostgresIdempotencyTable(self.db))


def node_identity(config: Config) -> tuple[str, str]:
    """This node's id and the URL the others reach it at, from the settings or their defaults."""
    server, cluster = config.server, config.cluster
    node_id = cluster.node_id or f"{socket.gethostname()}:{server.port}"
    host = server.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return node_id, cluster.advertise_url.rstrip("/") or f"http://{host}:{server.port}"


@asynccontextmanager
async def open_cluster(config: Config) -> AsyncIterator[Cluster]:
    """Connect, bring the schema up to date (safe with several nodes starting at once), and set up
    this node. Raises DatabaseUnavailable when PostgreSQL cannot be reached."""
    node_id, url = node_identity(config)
    async with AsyncExitStack() as stack:
        try:
            db = await stack.enter_async_context(
                Database.open(config.database.url, size=config.database.pool_size)
            )
            await db.call(migrate)
            keys = await ClusterKeys.open(db)
        except (DatabaseError, SchemaTooNew) as exc:  # OSError: "cannot start", exit code 1
            raise OSError(f"cannot use the cluster database: {exc}") from None
        node = ClusterNode(db, node_id, url, config.cluster.lease_ttl)
        store = await ClusterSessionStore.open(config.data_dir, node, keys)
        yield Cluster(db, node, store, ClusterLocator(node), keys, Listener(config.database.url), config)
