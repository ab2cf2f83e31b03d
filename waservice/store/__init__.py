"""What must survive a restart: the registry of sessions (registry.py), the data directory's
layout (layout.py) and the event log (eventlog.py). This is the only code that knows any of them;
all of it blocks, so every call runs in a worker thread, never on the trio thread.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import trio

from ..errors import StorageFailed
from ..events.model import Activity, LoggedEvent
from .eventlog import EventLog, Outbox
from .keys import NewKey, StoredKey
from .layout import DiskLayout
from .registry import CorruptRegistry, Registry, StoredSession

__all__ = [
    "CorruptRegistry",
    "EventStore",
    "NewKey",
    "Outbox",
    "SessionStore",
    "StoredKey",
    "StoredSession",
    "open_event_store",
    "open_store",
]

log = logging.getLogger("waservice.store")
T = TypeVar("T")


@asynccontextmanager
async def open_store(data_dir: Path) -> AsyncIterator[SessionStore]:
    """Open (creating if needed) the data directory; raises CorruptRegistry or OSError."""
    layout = DiskLayout(data_dir)
    for error in await trio.to_thread.run_sync(layout.prepare):
        log.warning("could not delete a deleted session's file: %s", error)
    registry = await trio.to_thread.run_sync(Registry, layout.registry)
    store = SessionStore(layout, registry)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store._registry_call(registry.close)


@asynccontextmanager
async def open_event_store(data_dir: Path) -> AsyncIterator[EventStore]:
    """The event log in the data directory (call after open_store, which creates the directory)."""
    layout = DiskLayout(data_dir)
    try:
        events = await trio.to_thread.run_sync(EventLog, layout.registry)
    except sqlite3.Error as exc:
        raise OSError(f"cannot open the event log in {layout.registry}: {exc}") from None
    store = EventStore(events)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.call(events.close)


class EventStore:
    """The event log in worker threads: appends on their own connection, one at a time, never
    queued behind reads or the webhook tables' work (one call at a time on the other connection)."""

    def __init__(self, log: EventLog, readers: int = 1) -> None:
        self._log = log
        self._append_limiter = trio.CapacityLimiter(1)
        self._limiter = trio.CapacityLimiter(readers)

    def add_outbox(self, outbox: Outbox) -> None:
        """Run `outbox` inside every append's transaction (see eventlog.Outbox)."""
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
        """Run a blocking function of the appending connection (appends and pruning only)."""
        return await self._in_thread(fn, args, self._append_limiter)

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking function of the log's connection (tables kept beside the log use this)."""
        return await self._in_thread(fn, args, self._limiter)

    async def _in_thread(
        self, fn: Callable[..., T], args: tuple[object, ...], limiter: trio.CapacityLimiter
    ) -> T:
        return await _in_thread(fn, args, limiter)

    @property
    def connection(self) -> sqlite3.Connection:
        """Only for functions passed to `call`: the log's connection, on the log's thread."""
        return self._log.connection


class SessionStore:
    def __init__(self, layout: DiskLayout, registry: Registry) -> None:
        self._layout = layout
        self._registry = registry
        # One registry call at a time (one SQLite connection); folder work apart, so that deleting
        # a large folder never delays a registry write.
        self._registry_limiter = trio.CapacityLimiter(1)
        self._disk_limiter = trio.CapacityLimiter(4)

    @property
    def data_dir(self) -> Path:
        return self._layout.data_dir

    def directory(self, session_id: str) -> Path:
        return self._layout.directory(session_id)

    async def list(self) -> list[StoredSession]:
        return await self._registry_call(self._registry.list)

    async def ensure(self, session_id: str) -> None:
        """Make sure the session is registered, leaving its settings alone if it is."""
        await self._disk_call(self._layout.create, session_id)
        await self._registry_call(self._registry.ensure, session_id)

    async def add(self, session_id: str, autoconnect: bool = True) -> None:
        """Register a session and create its folder; raises StorageFailed with nothing registered."""
        await self._disk_call(self._layout.create, session_id)
        await self._registry_call(self._registry.add, session_id, autoconnect)

    async def set_autoconnect(
        self, session_id: str, autoconnect: bool, down_reason: str | None = None
    ) -> None:
        await self._registry_call(self._registry.set_autoconnect, session_id, autoconnect, down_reason)

    async def remove(self, session_id: str) -> list[str]:
        """Forget the session and delete its folder, credentials included.

        Either the session is gone from the registry and its folder from its place, or (StorageFailed)
        nothing changed. Returns the files that could not be deleted; the next start retries them.
        """
        trashed = await self._disk_call(self._layout.move_to_trash, session_id)
        try:
            await self._registry_call(self._registry.remove, session_id)
        except StorageFailed:
            if trashed is not None:
                await self._disk_call(self._layout.restore_from_trash, session_id, trashed)
            raise
        if trashed is None:
            return []
        return await self._disk_call(self._layout.purge, trashed)

    # -- per-session API keys (store/keys.py) --------------------------------------------------

    async def create_key(self, session_id: str) -> NewKey | None:
        return await self._registry_call(self._registry.keys.create, session_id)

    def keys(self, session_id: str) -> list[StoredKey]:
        return self._registry.keys.list(session_id)

    async def delete_key(self, session_id: str, key_id: str) -> bool:
        """False if the session has no such key."""
        return await self._registry_call(self._registry.keys.delete, session_id, key_id)

    def check_key(self, key: str) -> StoredKey | None:
        """The session key `key` is, if it is one (no I/O: for every request)."""
        return self._registry.keys.check(key)

    async def _registry_call(self, fn: Callable[..., T], *args: object) -> T:
        return await _in_thread(fn, args, self._registry_limiter)

    async def _disk_call(self, fn: Callable[..., T], *args: object) -> T:
        return await _in_thread(fn, args, self._disk_limiter)


async def _in_thread(fn: Callable[..., T], args: tuple[object, ...], limiter: trio.CapacityLimiter) -> T:
    # Not abandoned on cancel: a registry write or a rename either happens or it does not.
    try:
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
    except (OSError, sqlite3.Error) as exc:
        raise StorageFailed(f"the data directory refused a change: {exc}") from exc
