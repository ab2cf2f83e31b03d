"""The most recent logged events in memory, and a wake-up for everyone who follows the log.

Followers (the live stream, webhook dispatchers) keep a cursor: the id of the last event they have.
While they keep up they read from this ring; one that falls further behind than the ring holds reads
the log instead (or is told to resume). So memory is bounded by the ring, not by slow followers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

import trio

from .model import LoggedEvent

RING = 4096


class Publisher(Protocol):
    """Told of every batch the recorder logged: the hub itself on one node, the log follower in a
    cluster (which publishes every node's events to the hub in id order)."""

    def publish(self, events: Sequence[LoggedEvent]) -> None: ...


class EventHub:
    def __init__(self, last_id: int, size: int = RING) -> None:
        self.last_id = last_id  # of the newest logged event
        self._ring: deque[LoggedEvent] = deque(maxlen=size)
        self._floor = last_id  # the ring holds every event with an id above this
        self._new = trio.Event()

    def publish(self, events: Sequence[LoggedEvent]) -> None:
        """Called by the recorder, in log order, once the events are durable."""
        if not events:
            return
        for event in events:
            if len(self._ring) == self._ring.maxlen:
                self._floor = self._ring[0].id
            self._ring.append(event)
        self.last_id = events[-1].id
        self._new.set()
        self._new = trio.Event()

    async def wait_beyond(self, after_id: int) -> None:
        """Return once an event newer than `after_id` is logged."""
        while self.last_id <= after_id:
            await self._new.wait()

    def since(self, after_id: int) -> list[LoggedEvent] | None:
        """Events after `after_id`, oldest first, or None when the ring no longer holds them all."""
        if after_id < self._floor:
            return None
        newer: list[LoggedEvent] = []
        for event in reversed(self._ring):
            if event.id <= after_id:
                break
            newer.append(event)
        newer.reverse()
        return newer
