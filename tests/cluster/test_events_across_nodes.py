"""Two nodes on one PostgreSQL log events at once: each node's hub, and a GET /events stream on it,
carry every event of both, once each, in id order (the follower, woken by NOTIFY)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest
import trio

from waservice.api.stream import EventFilter, LiveEvents
from waservice.events.hub import EventHub

from .eventnode import EventNode, event_node

pytestmark = pytest.mark.cluster

WAIT = 60.0  # a safety net on a loaded box; every wait ends as soon as the events are there


async def follow_hub(hub: EventHub, count: int) -> list[int]:
    """What a follower of the hub sees (as the dispatcher and streams read it), up to `count` events."""
    cursor, seen = hub.last_id, []
    while len(seen) < count:
        await hub.wait_beyond(cursor)
        batch = hub.since(cursor)
        assert batch is not None
        seen.extend(e.id for e in batch)
        cursor = batch[-1].id
    return seen


async def stream_ids(live: LiveEvents, count: int) -> list[int]:
    ids: list[int] = []
    async with aclosing(live.stream(EventFilter(), 0)) as chunks:  # type: ignore[type-var]
        async for chunk in chunks:
            ids.extend(int(m) for m in re.findall(rb"^id: (\d+)\nevent:", chunk, re.M))
            if len(ids) >= count:
                return ids
    return ids


@pytest.fixture
async def nodes(url: str) -> AsyncIterator[tuple[EventNode, EventNode]]:
    # No polling: what one node logs reaches the other through NOTIFY alone.
    async with (
        event_node(url, "a", poll_interval=3600) as a,
        event_node(url, "b", poll_interval=3600) as b,
    ):
        yield a, b


async def test_every_node_sees_every_event_once_in_id_order(nodes: tuple[EventNode, EventNode]) -> None:
    a, b = nodes
    per_node = 150
    total = 2 * per_node
    results: dict[str, list[int]] = {}

    async def collect(name: str, coro_fn, *args) -> None:  # type: ignore[no-untyped-def]
        results[name] = await coro_fn(*args)

    async def emit_all(node: EventNode) -> None:
        for n in range(per_node):
            await node.emit(f"{node.node_id}{n % 3}", n)
            if n % 10 == 0:
                await trio.sleep(0)  # interleave the two nodes' batches

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            for node in (a, b):
                nursery.start_soon(collect, f"hub {node.node_id}", follow_hub, node.hub, total)
                live = LiveEvents(node.store, node.hub)  # type: ignore[arg-type]  # the cluster's store
                nursery.start_soon(collect, f"stream {node.node_id}", stream_ids, live, total)
            await trio.sleep(0.1)  # the streams are open (the replay of nothing is over)
            nursery.start_soon(emit_all, a)
            nursery.start_soon(emit_all, b)

    logged = [e.id for e in await a.store.after(0, 10_000)]
    assert len(logged) == total
    sessions = {e.session_id[0] for e in await a.store.after(0, 10_000)}
    assert sessions == {"a", "b"}  # both nodes' events, in one sequence
    for name, seen in results.items():
        assert seen == logged, name


async def test_a_stream_on_one_node_replays_what_another_logged(nodes: tuple[EventNode, EventNode]) -> None:
    a, b = nodes
    for n in range(5):
        await a.emit("s", n)
    with trio.fail_after(WAIT):
        while b.hub.last_id < 5:
            await b.hub.wait_beyond(b.hub.last_id)
        assert await stream_ids(LiveEvents(b.store, b.hub), 5) == [1, 2, 3, 4, 5]  # type: ignore[arg-type]
