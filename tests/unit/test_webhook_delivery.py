"""The dispatcher on trio's MockClock with a scripted receiver: schedule, order, isolation, dead letters.

Events go through the real recorder and log (their deliveries are written in the append's
transaction); only the HTTP is scripted. The log's calls run on the trio thread here (`InlineStore`):
a worker thread would let the autojump clock leap ahead while SQLite works, and every wait must be
exact virtual time.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import attrs
import msgspec
import pytest
import trio
import trio.testing

from waservice.errors import StorageFailed
from waservice.events.hub import EventHub
from waservice.events.model import Activity
from waservice.events.recorder import LINGER, EventRecorder
from waservice.store import EventStore
from waservice.store.eventlog import EventLog
from waservice.store.webhooks import WebhookTables
from waservice.webhooks.dispatcher import Dispatcher
from waservice.webhooks.schedule import Answered, Outcome, RetryPolicy, Unreachable
from waservice.webhooks.service import WebhookService, WebhookSpec

BASE = 1_800_000_000.0  # unix time at trio time 0
T = TypeVar("T")


@attrs.define
class Hit:
    url: str
    event_id: int
    at: float  # trio time
    headers: dict[str, str]
    body: bytes


@attrs.define
class ScriptedReceiver:
    """Answers per URL from a script (then 200); `hang` URLs never answer (a down receiver)."""

    scripts: dict[str, list[Outcome]] = attrs.Factory(dict)
    hang: set[str] = attrs.Factory(set)
    hits: list[Hit] = attrs.Factory(list)
    arrived: trio.Event = attrs.Factory(trio.Event)

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        self.hits.append(Hit(url, int(headers["webhook-id"]), trio.current_time(), headers, body))
        self.arrived.set()
        self.arrived = trio.Event()
        if url in self.hang:
            await trio.sleep(10)  # the sender's timeout
            return Unreachable("no answer within 10 s")
        script = self.scripts.get(url)
        return script.pop(0) if script else Answered(200)

    def ids(self, url: str) -> list[int]:
        return [h.event_id for h in self.hits if h.url == url]

    async def wait_for(self, check: Callable[[], bool]) -> None:
        while not check():
            await self.arrived.wait()


@attrs.define
class Rig:
    recorder: EventRecorder
    service: WebhookService
    dispatcher: Dispatcher
    receiver: ScriptedReceiver

    async def emit(self, session: str, n: int, type_: str = "message.received") -> None:
        await self.recorder.sink.send(Activity(session_id=session, type=type_, timestamp=BASE, data={"n": n}))

    async def hook(self, url: str, events: tuple[str, ...] = ("*",), session: str | None = None) -> str:
        webhook, _ = await self.service.create(WebhookSpec(url, events, session))
        return webhook.id


class InlineStore(EventStore):
    """On the trio thread: a worker thread would let the autojump clock leap ahead."""

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        await trio.lowlevel.checkpoint()
        return fn(*args)

    append_call = call


async def start_rig(
    event_store: EventStore,
    nursery: trio.Nursery,
    receiver: ScriptedReceiver,
    policy: RetryPolicy,
    concurrency: int = 64,
) -> Rig:
    tables = await event_store.call(WebhookTables, event_store.connection)
    event_store.add_outbox(tables.outbox)
    hub = EventHub(await event_store.last_id())
    recorder = EventRecorder(event_store, hub)
    await nursery.start(recorder.run)
    dispatcher = Dispatcher(
        event_store,
        tables,
        hub,
        receiver,
        policy,
        concurrency,
        wall=lambda: BASE + trio.current_time(),
        spread=lambda: 0.0,
        prune_interval=None,
    )
    await nursery.start(dispatcher.run)
    return Rig(recorder, WebhookService(event_store, tables, dispatcher), dispatcher, receiver)


@pytest.fixture
async def rig(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Rig]:
    log = EventLog(tmp_path / "events.db")
    yield await start_rig(InlineStore(log), nursery, ScriptedReceiver(), RetryPolicy())
    nursery.cancel_scope.cancel()


@pytest.fixture
async def small_rig(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Rig]:
    """Eight requests in flight at most, two per webhook."""
    log = EventLog(tmp_path / "events.db")
    yield await start_rig(InlineStore(log), nursery, ScriptedReceiver(), RetryPolicy(), concurrency=8)
    nursery.cancel_scope.cancel()


async def test_retries_follow_the_schedule_to_the_second(rig: Rig, autojump_clock):
    rig.receiver.scripts["http://a/"] = [Answered(500)] * 5 + [Answered(200)]
    await rig.hook("http://a/")
    t0 = trio.current_time()
    await rig.emit("s1", 1)
    await rig.receiver.wait_for(lambda: len(rig.receiver.hits) == 6)
    times = [h.at - t0 for h in rig.receiver.hits]
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [5, 30, 120, 600, 1800]
    assert len({h.event_id for h in rig.receiver.hits}) == 1  # one webhook-id across retries
    assert len({h.headers["webhook-timestamp"] for h in rig.receiver.hits}) == 6  # each signed anew


async def test_order_per_webhook_and_session_holds_under_failures(rig: Rig, autojump_clock):
    rig.receiver.scripts["http://a/"] = [Answered(200), Answered(503), Unreachable("reset"), Answered(502)]
    await rig.hook("http://a/")
    for n in range(6):
        await rig.emit("s1", n)
    await rig.receiver.wait_for(lambda: len(set(rig.receiver.ids("http://a/"))) == 6)
    await trio.testing.wait_all_tasks_blocked()
    ids = rig.receiver.ids("http://a/")
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == sorted(first_seen)
    # event 2 failed three times: nothing after it went out before it succeeded
    assert ids[:5] == [ids[0], ids[1], ids[1], ids[1], ids[1]]
    page, total = await rig.service.deliveries(await _only_hook(rig), "ok", 50, 0)
    assert total == 6 and {d.attempts for d in page} == {1, 4}


async def test_a_410_is_dead_at_once_and_redeliver_sends_it_again(rig: Rig, autojump_clock):
    rig.receiver.scripts["http://a/"] = [Answered(410)]
    hook = await rig.hook("http://a/")
    await rig.emit("s1", 1)
    await rig.emit("s1", 2)
    await rig.receiver.wait_for(lambda: len(rig.receiver.hits) == 2)
    await trio.testing.wait_all_tasks_blocked()
    dead, _ = await rig.service.deliveries(hook, "dead", 50, 0)
    assert [(d.attempts, d.last_status_code) for d in dead] == [(1, 410)]
    assert rig.receiver.ids("http://a/")[1] != dead[0].event_id  # the next event went on at once

    assert await rig.service.redeliver(hook, None) == 1
    await rig.receiver.wait_for(lambda: len(rig.receiver.hits) == 3)
    assert rig.receiver.hits[-1].event_id == dead[0].event_id
    await trio.testing.wait_all_tasks_blocked()
    assert (await rig.service.deliveries(hook, "dead", 50, 0))[1] == 0


async def test_a_down_receiver_holds_up_no_other_webhook_or_session(rig: Rig, autojump_clock):
    rig.receiver.hang.add("http://down/")
    rig.receiver.scripts["http://flaky/"] = [Answered(503)] * 100  # s1's lane retries all day
    await rig.hook("http://down/")
    await rig.hook("http://up/")
    await rig.hook("http://flaky/", session="s1")
    await rig.hook("http://fine/", session="s2")
    t0 = trio.current_time()
    for n in range(5):
        await rig.emit("s1", n)
        await rig.emit("s2", n)
    await rig.receiver.wait_for(
        lambda: len(rig.receiver.ids("http://up/")) == 10 and len(rig.receiver.ids("http://fine/")) == 5
    )
    # No waiting for the hanging receiver's 10 s timeouts (only the log's gathering of a burst).
    assert trio.current_time() - t0 <= 2 * LINGER
    assert len(rig.receiver.ids("http://down/")) == 2  # one request in flight per lane (s1, s2)
    assert len(rig.receiver.ids("http://flaky/")) == 1  # s1's first event, waiting for its retry


async def test_429_waits_for_retry_after(rig: Rig, autojump_clock):
    rig.receiver.scripts["http://a/"] = [Answered(429, retry_after=77.0)]
    await rig.hook("http://a/")
    await rig.emit("s1", 1)
    await rig.receiver.wait_for(lambda: len(rig.receiver.hits) == 2)
    first, second = rig.receiver.hits
    assert second.at - first.at == pytest.approx(77)


async def test_filters_choose_which_events_a_webhook_gets(rig: Rig, autojump_clock):
    await rig.hook("http://typed/", events=("chat.typing",))
    await rig.hook("http://s2/", session="s2")
    await rig.hook("http://all/")
    await rig.emit("s1", 1, "chat.typing")
    await rig.emit("s2", 2, "message.received")
    await rig.emit("s2", 3, "chat.typing")
    await rig.receiver.wait_for(lambda: len(rig.receiver.ids("http://all/")) == 3)
    await trio.testing.wait_all_tasks_blocked()
    got = defaultdict(list)
    for hit in rig.receiver.hits:
        got[hit.url].append(decoded(hit.body)["data"]["n"])
    assert sorted(got["http://typed/"]) == [1, 3]
    assert sorted(got["http://s2/"]) == [2, 3]


async def _only_hook(rig: Rig) -> str:
    (webhook,) = await rig.service.webhooks()
    return webhook.id


def decoded(body: bytes) -> dict:
    return msgspec.json.decode(body)


async def test_deleting_a_webhook_stops_its_lanes_at_once(rig: Rig, autojump_clock):
    rig.receiver.hang.add("http://down/")
    hook = await rig.hook("http://down/")
    await rig.emit("s1", 1)
    await rig.emit("s2", 1)
    await rig.receiver.wait_for(lambda: len(rig.receiver.hits) == 2)
    assert rig.dispatcher.lanes() == 2
    await rig.service.delete(hook)
    await trio.testing.wait_all_tasks_blocked()
    assert rig.dispatcher.lanes() == 0 and await rig.service.webhooks() == []


async def test_a_hung_receiver_with_many_sessions_takes_only_its_share(small_rig: Rig, autojump_clock):
    rig = small_rig
    rig.receiver.hang.add("http://down/")
    await rig.hook("http://down/")
    await rig.hook("http://up/")
    t0 = trio.current_time()
    for n in range(10):
        await rig.emit(f"s{n}", n)
    await rig.receiver.wait_for(lambda: len(rig.receiver.ids("http://up/")) == 10)
    # Not one of the hung requests' 10 s timeouts (only the log's gathering of a burst).
    assert trio.current_time() - t0 <= 2 * LINGER
    assert len(rig.receiver.ids("http://down/")) == 2  # its share of the 8 places


class RefusingStore(InlineStore):
    """The disk refuses the next `refusals` reads of deliveries (a full or failing disk)."""

    refusals = 0

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        if getattr(fn, "__name__", "") == "due" and self.refusals > 0:
            self.refusals -= 1
            raise StorageFailed("disk I/O error")
        return await super().call(fn, *args)


async def test_a_refused_read_is_retried_not_dropped(tmp_path: Path, nursery: trio.Nursery, autojump_clock):
    store = RefusingStore(EventLog(tmp_path / "events.db"))
    rig = await start_rig(store, nursery, ScriptedReceiver(), RetryPolicy())
    await rig.hook("http://a/")
    store.refusals = 3
    await rig.emit("s1", 1)  # one event: nothing else would wake the lane again
    with trio.fail_after(60):
        await rig.receiver.wait_for(lambda: len(rig.receiver.hits) == 1)
    assert store.refusals == 0
