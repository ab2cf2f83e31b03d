"""The durable event log, the hub that follows it, and the recorder between them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.unit.test_supervisor import pair
from waservice.engine.fake import FakeEngine
from waservice.events.hub import EventHub
from waservice.events.model import Activity, LoggedEvent, iso_utc
from waservice.events.recorder import LINGER, EventRecorder
from waservice.sessions.manager import SessionManager
from waservice.store import EventStore, open_event_store, open_store


def activity(
    n: int, session: str = "s1", type_: str = "message.received", key: str | None = None
) -> Activity:
    return Activity(session_id=session, type=type_, timestamp=1_764_358_800 + n, data={"n": n}, key=key)


async def test_append_gives_increasing_ids_and_reads_back_in_order(event_store: EventStore):
    logged = await event_store.append(activity(n) for n in range(5))
    assert [e.id for e in logged] == sorted(e.id for e in logged) and len({e.id for e in logged}) == 5
    again = await event_store.after(0, 100)
    assert again == logged
    assert again[0].timestamp == iso_utc(1_764_358_800) == "2025-11-28T19:40:00.000Z"
    assert await event_store.after(logged[2].id, 100) == logged[3:]
    assert await event_store.after(0, 2) == logged[:2]


async def test_filters_by_session_and_type(event_store: EventStore):
    await event_store.append(
        [activity(1, "a"), activity(2, "b"), activity(3, "a", "chat.typing"), activity(4, "b", "chat.typing")]
    )
    assert [e.data["n"] for e in await event_store.after(0, 10, session_id="a")] == [1, 3]
    assert [e.data["n"] for e in await event_store.after(0, 10, types=["chat.typing"])] == [3, 4]
    assert [e.data["n"] for e in await event_store.after(0, 10, "b", ["message.received"])] == [2]


async def test_a_redelivered_message_is_logged_once(event_store: EventStore):
    first = await event_store.append([activity(1, key="ABC"), activity(2, key="DEF")])
    again = await event_store.append([activity(3, key="ABC"), activity(4, "other", key="ABC"), activity(5)])
    assert len(first) == 2
    assert [(e.session_id, e.data["n"]) for e in again] == [("other", 4), ("s1", 5)]
    # the same id means something else under another type (a reaction's own id is its message's)
    assert len(await event_store.append([activity(6, type_="message.reaction", key="ABC")])) == 1


async def test_the_log_survives_a_restart_and_ids_never_go_back(tmp_path: Path):
    data = tmp_path / "data"
    async with open_store(data), open_event_store(data) as events:
        logged = await events.append(activity(n) for n in range(3))
        assert await events.prune(time.time() + 1) == 3  # everything is older than "soon"
    async with open_event_store(data) as events:
        assert await events.last_id() == logged[-1].id
        (next_one,) = await events.append([activity(9)])
        assert next_one.id > logged[-1].id


async def test_prune_keeps_recent_events(event_store: EventStore):
    await event_store.append(activity(n) for n in range(3))
    assert await event_store.prune(time.time() - 3600) == 0
    assert len(await event_store.after(0, 10)) == 3


async def test_the_hub_serves_followers_from_memory_until_they_fall_behind():
    hub = EventHub(last_id=10, size=3)
    assert hub.since(10) == []
    events = [activity(n) for n in range(5)]
    logged = [LoggedEvent(11 + i, a.type, a.session_id, "t", a.data) for i, a in enumerate(events)]
    hub.publish(logged[:2])
    assert [e.id for e in hub.since(10)] == [11, 12]
    hub.publish(logged[2:])  # ring of 3 now holds 13, 14, 15
    assert [e.id for e in hub.since(12)] == [13, 14, 15]
    assert hub.since(11) is None  # 12 left the ring: the follower reads the log
    assert hub.since(15) == []


async def test_waiting_followers_wake_on_publish():
    hub = EventHub(last_id=0)
    woke = trio.Event()

    async def follower() -> None:
        await hub.wait_beyond(0)
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set()
        hub.publish([LoggedEvent(1, "x", "s", "t", {})])
        with trio.fail_after(5):
            await woke.wait()


async def test_recorder_logs_in_arrival_order_then_publishes(event_store: EventStore):
    recorder = EventRecorder(event_store, EventHub(0))
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder.run)
        for n in range(1200):  # more than one batch
            await recorder.sink.send(activity(n))
        await recorder.finish()  # run() logs what is buffered, then returns
    logged = await event_store.after(0, 2000)
    assert [e.data["n"] for e in logged] == list(range(1200))
    assert recorder.hub.last_id == logged[-1].id and recorder.logged == 1200


async def test_a_lone_event_is_logged_at_once_and_a_burst_in_one_batch(
    event_store: EventStore, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
):
    batches: list[int] = []
    append = event_store.append

    async def counted(batch: list[Activity]) -> list[LoggedEvent]:
        batches.append(len(batch))
        return await append(batch)

    monkeypatch.setattr(event_store, "append", counted)
    recorder = EventRecorder(event_store, EventHub(0))
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder.run)
        await recorder.sink.send(activity(0))
        await recorder.hub.wait_beyond(0)  # the clock stands still: no waiting after a quiet spell
        for n in range(1, 4):  # right after it: a burst
            await recorder.sink.send(activity(n))
        await trio.testing.wait_all_tasks_blocked()
        assert recorder.logged == 1  # gathering
        mock_clock.jump(LINGER)
        await recorder.hub.wait_beyond(recorder.hub.last_id)
        assert batches == [1, 3] and recorder.logged == 4
        await recorder.finish()


async def test_state_changes_and_qr_codes_are_logged(
    manager: SessionManager, engine: FakeEngine, recorder: EventRecorder, event_store: EventStore
):
    await pair(manager, engine, "s1", "12025550123")
    with trio.fail_after(5):
        await recorder.hub.wait_beyond(2)
    while True:
        events = await event_store.after(0, 100, session_id="s1")
        statuses = [e.data for e in events if e.type == "session.status"]
        if statuses and statuses[-1]["state"] == "connected":
            break
        await recorder.hub.wait_beyond(events[-1].id)
    assert [(s["previous_state"], s["state"]) for s in statuses] == [
        ("disconnected", "connecting"),
        ("connecting", "qr_ready"),
        ("qr_ready", "connected"),
    ]
    assert statuses[-1]["phone"] == "12025550123"
    qr = [e for e in events if e.type == "session.qr"]
    assert len(qr) == 1 and qr[0].data["qr"] and qr[0].id < events[-1].id
