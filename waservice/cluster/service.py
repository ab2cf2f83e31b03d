"""A node of a cluster, put together: the database, this node's lease and the shared session store.

server.py opens it when `database.url` is set, instead of the SQLite session store.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs

from ..config import Config
from .database import Database
from .migrations import migrate
from .node import ClusterLocator, ClusterNode
from .store import ClusterSessionStore


@attrs.frozen
class Cluster:
    db: Database
    node: ClusterNode
    store: ClusterSessionStore
    locator: ClusterLocator


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
    async with Database.open(config.database.url, size=config.database.pool_size) as db:
        await db.call(migrate)
        node = ClusterNode(db, node_id, url, config.cluster.lease_ttl)
        store = await ClusterSessionStore.open(config.data_dir, node, keys=None)  # type: ignore[arg-type]
        yield Cluster(db, node, store, ClusterLocator(node))
