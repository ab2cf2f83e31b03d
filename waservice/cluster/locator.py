"""Who answers for a session in a cluster: the `Locator` the forwarding asks (cluster/forward.py)."""

from __future__ import annotations

import trio

from ..errors import SessionMoving
from . import registry
from .forward import Owner
from .node import ClusterNode

# How long an owner found in the registry is believed without asking again. Forwarding asks on every
# request for a session run elsewhere; a belief gone stale costs one 503 "moving" (the old owner
# never forwards a forwarded request again), which the caller retries.
OWNER_CACHE_SECONDS = 1.0
OWNER_CACHE_SIZE = 100_000


class ClusterLocator:
    def __init__(self, node: ClusterNode) -> None:
        self._node = node
        self._known: dict[str, tuple[Owner, float]] = {}  # session id -> (owner, believed until)

    async def owner(self, session_id: str, *, create: bool) -> Owner | None:
        node = self._node
        if session_id in node.held:
            return None
        known = self._known.get(session_id)
        if known is not None and known[1] > trio.current_time():
            return known[0]
        row = await node.call(registry.session, session_id)
        if row is None:
            if not create:
                return None  # answered here: no such session
            target = await node.call(registry.place, session_id)
            if target is None or target.node_id == node.node_id:
                return None  # placed here (or nowhere live: this node creates it)
            return Owner(target.node_id, target.url)
        if row.owner is None and node.draining:  # it is handing sessions over, not taking them
            raise SessionMoving(f"session '{session_id}' is moving to another node; retry")
        if row.owner is None or row.owner == node.node_id:
            await node.take_here(session_id)  # nobody live runs it: this node will
            return None
        owner = Owner(row.owner, row.owner_url or "")
        if len(self._known) >= OWNER_CACHE_SIZE:
            self._known.clear()
        self._known[session_id] = (owner, trio.current_time() + OWNER_CACHE_SECONDS)
        return owner
