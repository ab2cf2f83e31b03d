"""One node's event machinery on the real server, for the cluster tests, wired as server.py wires it
(`ClusterEvents`): its own pool, the log follower woken by its `Listener`, hub, recorder, webhook
tables and, once started, a webhook dispatcher holding lanes, with redeliver pokes relayed. Several
in one trio test are several nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from waservice.cluster.events import ClusterEvents
from waservice.cluster.eventstore import PgEventStore, open_pg_event_store
from waservice.cluster.notify import Backoff, Listener
from waservice.cluster.webhooks import PgWebhookTables
from waservice.events.hub import EventHub
from waservice.events.model import Activity
from waservice.events.recorder import EventRecorder
from waservice.webhooks.dispatcher import Dispatcher
from waservice.webhooks.schedule import RetryPolicy
from waservice.webhooks.sender import HttpSender
from waservice.webhooks.service import WebhookService


@attrs.define(eq=False)
class EventNode:
    node_id: str
    store: PgEventStore
    hub: EventHub
    events: ClusterEvents
    recorder: EventRecorder
    nursery: trio.Nursery
    dispatcher: Dispatcher | None = None

    @property
    def tables(self) -> PgWebhookTables:
        return self.events.webhook_tables

    async def emit(self, session: str, n: int) -> None:
        await self.recorder.sink.send(
            Activity(session_id=session, type="message.received", timestamp=1_800_000_000 + n, data={"n": n})
        )

    async def start_dispatcher(self) -> WebhookService:
        sender = HttpSender(timeout=5.0)
        self.dispatcher = Dispatcher(
            self.store,
            self.tables,
            self.hub,
            sender,
            RetryPolicy(),
            prune_interval=None,
            claims=self.events.claims,
        )
        await self.nursery.start(self._dispatch, self.dispatcher, sender)
        self.nursery.start_soon(self.events.relay_pokes, self.dispatcher)
        return WebhookService(self.store, self.tables, self.dispatcher)

    @staticmethod
    async def _dispatch(
        dispatcher: Dispatcher,
        sender: HttpSender,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await dispatcher.run(task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                await sender.aclose()


@asynccontextmanager
async def event_node(
    url: str, node_id: str, poll_interval: float = 2.0, lane_ttl: float = 30.0
) -> AsyncIterator[EventNode]:
    """A node until the block ends (cancel `node.nursery` to make it die on the spot)."""
    async with open_pg_event_store(url, size=4) as store:
        hub = EventHub(await store.last_id())
        listener = Listener(url, poll_interval=0.1, backoff=Backoff(initial=0.05, maximum=0.5))
        events = ClusterEvents(store, hub, node_id, listener, poll_interval=poll_interval, lane_ttl=lane_ttl)
        store.add_outbox(events.webhook_tables.outbox)
        recorder = EventRecorder(store, events.follower)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.run)
            await nursery.start(events.follow)
            await nursery.start(recorder.run)
            yield EventNode(node_id, store, hub, events, recorder, nursery)
            nursery.cancel_scope.cancel()
