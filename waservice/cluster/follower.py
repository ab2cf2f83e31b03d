"""Every node's events reach this node's hub, in id order: the cluster's log followed by its ids.

On one node the recorder publishes each batch it appends. In a cluster the other nodes append too,
and the hub's followers (the live stream, the webhook dispatcher) need one order for all of them.
So the recorder only says "something new" (`publish`) and this follower reads the log after the
hub's last id and publishes what it finds; appends become visible in id order (cluster/eventlog.py),
so reading `id > last` never skips one. It reads when told: by the local recorder, by a NOTIFY from
another node's append (payload: the new last id), after the listener reconnects, and every
`poll_interval` seconds in case a notification was lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from ..errors import StorageFailed
from ..events.hub import EventHub
from ..events.model import LoggedEvent
from .eventstore import PgEventStore
from .notify import Message, Notification

__all__ = ["LogFollower"]

log = logging.getLogger("waservice.cluster.events")

POLL_INTERVAL = 5.0
PAGE = 1000  # events read at a time: a follower far behind catches up in bounded steps


class LogFollower:
    def __init__(
        self, store: PgEventStore, hub: EventHub, *, poll_interval: float = POLL_INTERVAL, page: int = PAGE
    ) -> None:
        self.store = store
        self.hub = hub
        self.poll_interval = poll_interval
        self.page = page
        self._wake = trio.Event()

    def publish(self, _events: Sequence[LoggedEvent]) -> None:
        """The recorder's hook (it takes this as its hub): this node appended; read it in order."""
        self._wake.set()

    async def run(
        self,
        notices: trio.MemoryReceiveChannel[Message] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Follow until cancelled; `notices` is `Listener.subscribe(eventlog.CHANNEL)` (or None: poll)."""
        async with trio.open_nursery() as nursery:
            if notices is not None:
                nursery.start_soon(self._take_notices, notices)
            task_status.started()
            while True:
                with trio.move_on_after(self.poll_interval):
                    await self._wake.wait()
                self._wake = trio.Event()
                await self.catch_up()

    async def catch_up(self) -> None:
        """Publish everything logged after the hub's last id."""
        try:
            while True:
                events = await self.store.after(self.hub.last_id, self.page)
                self.hub.publish(events)
                if len(events) < self.page:
                    return
        except StorageFailed as exc:  # the next wake-up or poll tries again
            log.warning("could not read the event log: %s", exc)

    async def _take_notices(self, notices: trio.MemoryReceiveChannel[Message]) -> None:
        async with notices:
            async for message in notices:
                # A notice of an id the hub already has (this node's own append) needs no read.
                if isinstance(message, Notification) and _id(message.payload) <= self.hub.last_id:
                    continue
                self._wake.set()


def _id(payload: str) -> int:
    try:
        return int(payload)
    except ValueError:
        return 2**63  # not ours to parse: read anyway
