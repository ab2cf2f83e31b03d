"""The session store of a node in a cluster: what `store.SessionStore` is on one node, on PostgreSQL.

The session manager and supervisors use it exactly as they use the SQLite one. The differences:
the registry is shared, so writes about a session are the owner's and fenced by its epoch (a node
that lost a session changes nothing: `SessionMoving`), `list()` is empty (the node adopts the
sessions it comes to own instead of restoring them all), and a new session is created owned by
this node. Session folders stay local: with whatsmeow's keys in PostgreSQL they hold nothing that
another node needs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from ..errors import SessionMoving, StorageFailed
from ..store.keys import NewKey, StoredKey
from ..store.layout import DiskLayout
from ..store.registry import StoredSession
from . import registry
from .keys import ClusterKeys
from .leases import LeaseLost
from .node import ClusterNode

T = TypeVar("T")


class ClusterSessionStore:
    def __init__(self, layout: DiskLayout, node: ClusterNode, keys: ClusterKeys) -> None:
        self._layout = layout
        self._node = node
        self._keys = keys

    @classmethod
    async def open(cls, data_dir: Path, node: ClusterNode, keys: ClusterKeys) -> ClusterSessionStore:
        layout = DiskLayout(data_dir)
        await _on_disk(layout.prepare)
        return cls(layout, node, keys)

    @property
    def data_dir(self) -> Path:
        return self._layout.data_dir

    def directory(self, session_id: str) -> Path:
        return self._layout.directory(session_id)

    async def list(self) -> list[StoredSession]:
        return []  # the node adopts what it owns (cluster/node.py)

    async def ensure(self, session_id: str) -> None:
        await self._node.call(registry.ensure, session_id)

    async def add(self, session_id: str, autoconnect: bool = True) -> None:
        """Create the session owned by this node, or take it (POST /connect)."""
        await _on_disk(self._layout.create, session_id)
        owned = await self._node.call(registry.take, self._node.node_id, session_id, connect=True)
        assert owned is not None  # connect=True creates it
        self._node.held[session_id] = owned.epoch

    async def set_autoconnect(
        self, session_id: str, autoconnect: bool, down_reason: str | None = None
    ) -> None:
        await self._fenced(registry.set_autoconnect, session_id, autoconnect, down_reason)

    async def remove(self, session_id: str) -> list[str]:
        await self._fenced(registry.remove, session_id)
        self._node.held.pop(session_id, None)
        trashed = await _on_disk(self._layout.move_to_trash, session_id)
        return [] if trashed is None else await _on_disk(self._layout.purge, trashed)

    # -- per-session API keys (cluster/keys.py) -------------------------------------------------

    async def create_key(self, session_id: str) -> NewKey | None:
        return await self._keys.create(session_id)

    def keys(self, session_id: str) -> list[StoredKey]:
        return self._keys.list(session_id)

    async def delete_key(self, session_id: str, key_id: str) -> bool:
        return await self._keys.delete(session_id, key_id)

    def check_key(self, key: str) -> StoredKey | None:
        return self._keys.check(key)

    # -- the database ---------------------------------------------------------------------------

    async def _fenced(self, fn: Callable[..., None], session_id: str, *args: object) -> None:
        """An owner's write about a session, carrying the epoch this node runs it at."""
        node = self._node
        epoch = node.held.get(session_id)
        if epoch is None:
            raise SessionMoving(f"session '{session_id}' is no longer run by this node; retry")
        try:
            await node.call(fn, node.node_id, session_id, epoch, *args)
        except LeaseLost:
            raise SessionMoving(f"session '{session_id}' has moved to another node; retry") from None


async def _on_disk(fn: Callable[..., T], *args: object) -> T:
    try:
        return await trio.to_thread.run_sync(fn, *args)
    except OSError as exc:
        raise StorageFailed(f"the data directory refused a change: {exc}") from exc
