"""Several service nodes in this process, each its own app (fake engine, store, event log) served by
hypercorn on a real socket (port 0), forwarding through a `Locator` the test controls: the harness
of the forwarding tests and of bench/forwarding.py."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from waservice.api.app import create_app
from waservice.api.asgi import ServerSafeSend
from waservice.api.stream import LiveEvents
from waservice.cluster.database import DatabaseUnavailable
from waservice.cluster.forward import Forwarding, Owner
from waservice.config import MediaConfig
from waservice.engine.fake import FakeEngine
from waservice.events.hub import EventHub
from waservice.events.recorder import EventRecorder
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager
from waservice.store import open_event_store, open_store
from waservice.store.messages import MessageIndex


@attrs.define
class DictLocator:
    """Who owns what, as a test says: `owners[session_id]`; anything else is answered locally."""

    owners: dict[str, Owner] = attrs.field(factory=dict)
    unavailable: bool = False  # then every lookup fails as a lost database would
    asked: list[tuple[str, bool]] = attrs.field(factory=list)  # (session_id, create) per lookup

    async def owner(self, session_id: str, *, create: bool) -> Owner | None:
        self.asked.append((session_id, create))
        if self.unavailable:
            raise DatabaseUnavailable("PostgreSQL unavailable: connection refused (test)")
        return self.owners.get(session_id)


@attrs.define(eq=False)
class Node:
    node_id: str
    url: str
    engine: FakeEngine
    manager: SessionManager
    messages: MessageIndex
    live: LiveEvents
    forwarding: Forwarding
    locator: DictLocator
    seen: list[str] = attrs.field(factory=list)  # "METHOD /path" of each request it received

    @property
    def owner(self) -> Owner:
        return Owner(self.node_id, self.url)


@contextlib.asynccontextmanager
async def open_node(
    node_id: str,
    data_dir: Path,
    locator: DictLocator,
    *,
    api_key: str = "",
    timeout: float = 10.0,
    media: MediaConfig | None = None,
) -> AsyncIterator[Node]:
    """A node serving on 127.0.0.1 on a free port until the block ends."""
    async with (
        open_store(data_dir) as store,
        open_event_store(store.data_dir) as event_store,
        trio.open_nursery() as nursery,
    ):
        messages = await MessageIndex.open(event_store)
        recorder = EventRecorder(event_store, EventHub(await event_store.last_id()))
        await nursery.start(recorder.run)
        engine = FakeEngine(recorder.sink)  # contacts' activity goes to the log, as with a real engine
        manager = await nursery.start(
            SessionManager(engine, store, ReconnectPolicy(), record=recorder.record).run
        )
        live = LiveEvents(event_store, recorder.hub)
        app = create_app(
            manager,
            api_key,
            live=live,
            messages=messages,
            media_config=media,
            forwarding=(forwarding := Forwarding(locator, node_id, timeout=timeout)),
        )
        seen: list[str] = []

        async def recording(scope, receive, send) -> None:  # below every hook: all that arrives
            if scope["type"] == "http":
                seen.append(f"{scope['method']} {scope['path']}")
            await ServerSafeSend(app)(scope, receive, send)

        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        stop = trio.Event()
        (bound,) = await nursery.start(
            functools.partial(serve, recording, config, shutdown_trigger=stop.wait)
        )
        node = Node(node_id, bound, engine, manager, messages, live, forwarding, locator, seen)
        try:
            yield node
        finally:
            live.close()
            forwarding.close()
            stop.set()
            await manager.stop(trio.current_time() + 5)
            nursery.cancel_scope.cancel()
