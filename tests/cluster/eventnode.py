"""One node's event machinery on the real server, for the cluster tests: its own pool, log follower
(woken by LISTEN), hub, recorder, webhook tables and, once started, a webhook dispatcher holding
lanes through `ws_webhook_lanes`. Several in one trio test are several nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from waservice.cluster.eventlog import CHANNEL
from waservice.cluster.eventstore import PgEventStore, open_pg_event_store
from waservice.cluster.follower import LogFollower
from waservice.cluster.lanes import PgLaneClaims
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
    follower: LogFollower
    recorder: EventRecorder
    tables: PgWebhookTables
    nursery: trio.Nursery
    dispatcher: Dispatcher | None = None
    dispatcher_scope: trio.CancelScope | None = None

    async def emit(self, session: str, n: int) -> None:
        await self.recorder.sink.send(
            Activity(session_id=session, type="message.received", timestamp=1_800_000_000 + n, data={"n": n})
        )

    async def start_dispatcher(self, lane_ttl: float = 30.0) -> WebhookService:
        claims = PgLaneClaims(self.store, self.node_id, lane_ttl)
        sender = HttpSender(timeout=5.0)
        self.dispatcher = Dispatcher(
            self.store, self.tables, self.hub, sender, RetryPolicy(), prune_interval=None, claims=claims
        )
        self.dispatcher_scope = trio.CancelScope()
        await self.nursery.start(self._dispatch, self.dispatcher, self.dispatcher_scope, sender)
        return WebhookService(self.store, self.tables, self.dispatcher)

    @staticmethod
    async def _dispatch(
        dispatcher: Dispatcher,
        scope: trio.CancelScope,
        sender: HttpSender,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with scope:
            try:
                await dispatcher.run(task_status=task_status)
            finally:
                with trio.CancelScope(shield=True):
                    await sender.aclose()


@asynccontextmanager
async def event_node(url: str, node_id: str, poll_interval: float = 2.0) -> AsyncIterator[EventNode]:
    """A node until the block ends (cancel `node.nursery` to make it die on the spot)."""
    async with open_pg_event_store(url, size=4) as store:
        tables = PgWebhookTables(store.connection, node_id)
        store.add_outbox(tables.outbox)
        hub = EventHub(await store.last_id())
        follower = LogFollower(store, hub, poll_interval=poll_interval)
        recorder = EventRecorder(store, follower)
        listener = Listener(url, poll_interval=0.1, backoff=Backoff(initial=0.05, maximum=0.5))
        async with trio.open_nursery() as nursery:
            notices = listener.subscribe(CHANNEL)
            await nursery.start(listener.run)
            await nursery.start(follower.run, notices)
            await nursery.start(recorder.run)
            yield EventNode(node_id, store, hub, follower, recorder, tables, nursery)
            nursery.cancel_scope.cancel()
