"""GET /events through the app's test client: the wire format, filters, resume without gap or
duplicate, the bound on a slow reader, heartbeats, the API key, the subscriber cap and shutdown."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from waservice.api.app import create_app
from waservice.api.stream import LiveEvents
from waservice.config import StreamConfig
from waservice.events.hub import EventHub
from waservice.events.model import Activity
from waservice.events.recorder import EventRecorder
from waservice.sessions.manager import SessionManager
from waservice.store import EventStore


def activity(n: int, session: str = "s1", type_: str = "message.received") -> Activity:
    return Activity(session_id=session, type=type_, timestamp=1_764_358_800 + n, data={"n": n})


@attrs.define
class Block:
    """One SSE block: an event (with its fields) or only comments."""

    id: int | None = None
    event: str | None = None
    data: dict | None = None
    comments: list[str] = attrs.Factory(list)
    retry: int | None = None


def parse_block(raw: str) -> Block:
    block = Block()
    for line in raw.split("\n"):
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            block.comments.append(value)
        elif name == "id":
            block.id = int(value)
        elif name == "event":
            block.event = value
        elif name == "data":
            assert block.data is None, f"more than one data line: {raw!r}"
            block.data = json.loads(value)
        elif name == "retry":
            block.retry = int(value)
        else:
            raise AssertionError(f"unknown field in {raw!r}")
    return block


class Subscriber:
    """A GET /events read through the test client, one block at a time."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self._buffer = ""
        self.ended = False
        self.received_bytes = 0

    async def block(self) -> Block:
        while "\n\n" not in self._buffer:
            chunk = await self.connection.receive()
            if not chunk:  # the body's end
                self.ended = True
                raise EOFError(f"the stream ended; left over: {self._buffer!r}")
            self.received_bytes += len(chunk)
            self._buffer += chunk.decode()
        raw, _, self._buffer = self._buffer.partition("\n\n")
        return parse_block(raw)

    async def events(self, count: int) -> list[Block]:
        found: list[Block] = []
        with trio.fail_after(10):
            while len(found) < count:
                block = await self.block()
                if block.event is not None:
                    found.append(block)
        return found

    async def until(self, predicate) -> list[Block]:
        seen: list[Block] = []
        with trio.fail_after(10):
            while not seen or not predicate(seen[-1]):
                seen.append(await self.block())
        return seen

    async def live(self) -> list[Block]:
        """The blocks up to the one that says the replay is over."""
        return await self.until(lambda block: "live" in block.comments)

    async def end(self) -> list[Block]:
        """Every block up to the end of the body."""
        seen: list[Block] = []
        with trio.fail_after(10):
            while True:
                try:
                    seen.append(await self.block())
                except EOFError:
                    return seen


@asynccontextmanager
async def subscribe(client, live: LiveEvents, path: str = "/events", **headers: str) -> AsyncIterator:
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    # The test client never closes its side after a cancelled response: the scope stops its reading.
    with trio.CancelScope() as scope:
        async with client.request(path, headers=headers) as connection:
            await connection.send_complete()
            try:
                yield Subscriber(connection)
            except BaseException:
                scope.cancel()
                raise
            await connection.disconnect()
            # A stream in a log read ends when the read returns. Real time: some tests mock trio's.
            deadline = time.monotonic() + 5
            while live.open:
                assert time.monotonic() < deadline, "a stream outlived its client"
                await trio.to_thread.run_sync(time.sleep, 0.001)
            scope.cancel()


@pytest.fixture
def stream_config() -> StreamConfig:
    return StreamConfig(coalesce=0)  # each write as soon as it can go: the tests count them


@pytest.fixture
def live(event_store: EventStore, recorder: EventRecorder, stream_config: StreamConfig) -> LiveEvents:
    return LiveEvents(event_store, recorder.hub, stream_config)


@pytest.fixture
def app(manager: SessionManager, live: LiveEvents):
    return create_app(manager, live=live)


async def record(recorder: EventRecorder, *activities: Activity) -> int:
    """Log them; returns the id of the last one once it is published."""
    target = recorder.logged + len(activities)
    for a in activities:
        await recorder.sink.send(a)
    with trio.fail_after(10):
        while recorder.logged < target:
            await recorder.hub.wait_beyond(recorder.hub.last_id)
    return recorder.hub.last_id


# -- the wire --------------------------------------------------------------------------------------


async def test_new_events_arrive_with_their_id_type_and_envelope(client, live, recorder):
    head = await record(recorder, activity(0))  # before the subscription: not sent
    async with subscribe(client, live) as sub:
        opening, ready = await sub.live()
        assert opening.retry == 3000 and opening.event is None and opening.id == head
        assert ready.id is None
        assert sub.connection.status_code == 200
        headers = sub.connection.headers
        assert headers["Content-Type"].startswith("text/event-stream")
        assert headers["Cache-Control"] == "no-store" and headers["X-Accel-Buffering"] == "no"
        last = await record(recorder, activity(1), activity(2, "s2", "chat.typing"))
        first, second = await sub.events(2)
    assert (first.id, first.event, second.id, second.event) == (
        last - 1,
        "message.received",
        last,
        "chat.typing",
    )
    assert second.data == {
        "id": last,
        "type": "chat.typing",
        "session_id": "s2",
        "timestamp": "2025-11-28T19:40:02.000Z",
        "data": {"n": 2},
    }


async def test_filters_by_session_and_types(client, live, recorder):
    async with subscribe(client, live, "/events?session_id=a&types=chat.typing,presence") as sub:
        await sub.live()
        await record(
            recorder,
            activity(1, "a"),
            activity(2, "b", "chat.typing"),
            activity(3, "a", "chat.typing"),
            activity(4, "a", "presence"),
        )
        got = await sub.events(2)
    assert [(b.data["session_id"], b.event, b.data["data"]["n"]) for b in got] == [
        ("a", "chat.typing", 3),
        ("a", "presence", 4),
    ]


@pytest.mark.parametrize(
    ("query", "headers", "problem"),
    [
        ("types=message.received,nope", {}, "unknown event type 'nope'"),
        ("types=", {}, "unknown event type ''"),
        ("session_id=bad%20id", {}, "invalid session_id"),
        ("after=-1", {}, "after must be an event id"),
        ("after=1e3", {}, "after must be an event id"),
        ("", {"Last-Event-ID": "x"}, "Last-Event-ID must be an event id"),
        ("since=3", {}, "unexpected query parameter 'since'"),
    ],
)
async def test_bad_filters_are_400_with_the_reason(client, query, headers, problem):
    response = await client.get(f"/events?{query}", headers=headers)
    assert response.status_code == 400
    body = await response.get_json()
    assert body["success"] is False and problem in body["error"], body


# -- resume ----------------------------------------------------------------------------------------


async def test_last_event_id_replays_exactly_the_missed_events_then_goes_live(client, live, recorder):
    last = await record(recorder, *(activity(n) for n in range(5)))
    async with subscribe(client, live, Last_Event_ID=str(last - 2)) as sub:
        replayed = await sub.events(2)
        assert [b.id for b in replayed] == [last - 1, last]
        newest = await record(recorder, activity(5), activity(6))
        live_ones = await sub.events(2)
    assert [b.id for b in live_ones] == [newest - 1, newest]


async def test_last_event_id_wins_over_after(client, live, recorder):
    last = await record(recorder, *(activity(n) for n in range(4)))
    async with subscribe(client, live, f"/events?after={last - 3}", Last_Event_ID=str(last - 1)) as sub:
        (only,) = await sub.events(1)
    assert only.id == last


def use_small_ring(live: LiveEvents, recorder: EventRecorder, size: int, page: int) -> None:
    """A hub that keeps `size` events, so that a resume must read the log, in pages of `page`."""
    hub = EventHub(recorder.hub.last_id, size=size)
    recorder.hub = live.hub = hub
    live.config = attrs.evolve(live.config, replay_page=page)


@pytest.fixture
def small_ring(live: LiveEvents, recorder: EventRecorder) -> None:
    use_small_ring(live, recorder, size=4, page=3)


def source(n: int) -> str:
    return "a" if n % 3 == 0 else "b"


@pytest.mark.parametrize("session", [None, "a"])
async def test_a_replay_longer_than_the_ring_continues_live(client, live, recorder, small_ring, session):
    await record(recorder, *(activity(n, source(n)) for n in range(20)))
    path = "/events?after=0" + (f"&session_id={session}" if session else "")
    expected = [n for n in range(20) if session in (None, source(n))]
    async with subscribe(client, live, path) as sub:
        replayed = await sub.events(len(expected))
        newest = await record(recorder, activity(20, "a"))
        (live_one,) = await sub.events(1)
    assert [b.data["data"]["n"] for b in replayed] == expected
    assert live_one.id == newest


class LogsWhileReplaying:
    """The event store, with 3 new events logged around each of the replay's first reads."""

    def __init__(self, store: EventStore, recorder: EventRecorder, before_read: bool) -> None:
        self.store = store
        self.recorder = recorder
        self.before_read = before_read
        self.next = 100

    async def after(self, *args, **kwargs):
        if self.before_read:
            await self._more()
        page = await self.store.after(*args, **kwargs)
        if not self.before_read:
            await self._more()
        return page

    async def _more(self) -> None:
        if self.next < 112:
            await record(self.recorder, *(activity(n, source(n)) for n in range(self.next, self.next + 3)))
            self.next += 3


@pytest.mark.parametrize("session", [None, "a"])
@pytest.mark.parametrize("before_read", [True, False], ids=["logged-before-a-read", "logged-after-a-read"])
async def test_events_logged_during_a_replay_arrive_once_in_order(
    client, live, recorder, event_store, session, before_read
):
    # A page larger than the ring: the filtered replay reads short pages that hold events logged
    # after it noted the hub's head.
    use_small_ring(live, recorder, size=2, page=6)
    await record(recorder, *(activity(n, source(n)) for n in range(10)))
    live.store = logging_store = LogsWhileReplaying(event_store, recorder, before_read)
    path = "/events?after=0" + (f"&session_id={session}" if session else "")
    async with subscribe(client, live, path) as sub:
        await sub.events(1)  # the replay is under way
        await record(recorder, activity(200, "a"))  # its id: wherever the replay's own logging put it
        got = await sub.until(lambda block: block.data is not None and block.data["data"]["n"] == 200)
    assert logging_store.next > 100  # events were logged during the replay
    newest = got[-1].id
    logged = [e for e in await event_store.after(1, 1000, session) if e.id <= newest]
    events = [b for b in got if b.event is not None]
    assert [b.id for b in events] == [e.id for e in logged]  # each once, in log order


async def test_a_cursor_beyond_the_log_replays_nothing_and_misses_nothing(client, live, recorder):
    last = await record(recorder, activity(1))
    async with subscribe(client, live, f"/events?after={last + 1000}") as sub:
        await sub.live()
        newest = await record(recorder, activity(2))
        (got,) = await sub.events(1)
    assert got.id == newest


# -- a slow reader ---------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_stalled_reader_in_a_10000_event_burst_stays_bounded_and_is_told_why(client, live, recorder):
    async with subscribe(client, live) as sub:
        await sub.live()
        # The reader stops reading; the test client's channel takes 10 writes, then the stream waits.
        await record(recorder, *(activity(n) for n in range(10_000)))
        await trio.testing.wait_all_tasks_blocked()
        buffered = sub.connection._client_receive.statistics().current_buffer_used
        assert buffered <= 10  # everything else is in the hub's ring, shared by every stream
        blocks = await sub.end()
    events = [b for b in blocks if b.event not in (None, "overflow")]
    overflow = blocks[-1]
    assert overflow.event == "overflow" and overflow.id is None
    assert "fell behind" in overflow.data["reason"]
    assert overflow.data["last_event_id"] == events[-1].id
    # at most 11 writes of about 64 KiB reached the reader: far fewer than the burst
    assert len(events) < 10_000 and sub.received_bytes < 11 * 70_000
    assert [b.id for b in events] == list(range(events[0].id, events[-1].id + 1))


@pytest.fixture
def write_limit(live: LiveEvents) -> float:
    live.config = attrs.evolve(live.config, write_timeout=5.0, heartbeat=1000.0)
    return 5.0


async def test_a_write_blocked_longer_than_the_limit_ends_the_stream(
    client, live, recorder, write_limit, mock_clock
):
    recorder.linger = 0  # the mock clock stands still: a burst's wait for more would never end
    async with subscribe(client, live) as sub:
        await sub.live()
        for n in range(12):  # one write each: the test client holds 10, the next one waits
            await record(recorder, activity(n))
            await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(write_limit + 1)
        blocks = await sub.end()
    assert blocks[-1].event == "overflow" and "too slow" in blocks[-1].data["reason"]
    assert blocks[-1].data["last_event_id"] == blocks[-2].id


async def test_a_write_too_slow_in_the_middle_of_a_replay_page_resumes_from_what_was_written(
    client, live, recorder, write_limit, mock_clock
):
    recorder.linger = 0  # the mock clock stands still: a burst's wait for more would never end
    use_small_ring(live, recorder, size=4, page=2000)
    big = "x" * 1000
    await record(
        recorder,
        *(
            Activity(session_id="s1", type="presence", timestamp=1.0, data={"n": n, "pad": big})
            for n in range(1500)
        ),
    )  # one page of about 24 writes of 64 KiB
    async with subscribe(client, live, "/events?after=0") as sub:
        deadline = time.monotonic() + 10
        while sub.connection._client_receive.statistics().current_buffer_used < 10:  # the writer waits
            assert time.monotonic() < deadline
            await trio.to_thread.run_sync(time.sleep, 0.005)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(write_limit + 1)
        blocks = await sub.end()
    events = [b for b in blocks if b.event == "presence"]
    overflow = blocks[-1]
    assert overflow.event == "overflow" and "too slow" in overflow.data["reason"]
    assert len(events) < 1500
    assert overflow.data["last_event_id"] == events[-1].id  # not the end of the page


# -- heartbeat, key, cap, shutdown ----------------------------------------------------------------


async def test_a_quiet_stream_gets_a_keepalive_every_heartbeat(client, live, recorder, mock_clock):
    recorder.linger = 0  # the mock clock stands still: a burst's wait for more would never end
    async with subscribe(client, live, "/events?types=presence") as sub:
        await sub.live()
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(14.9)
        await trio.testing.wait_all_tasks_blocked()
        assert sub.connection._client_receive.statistics().current_buffer_used == 0
        mock_clock.jump(0.2)
        beat = await sub.block()
        assert beat.comments == ["keepalive"] and beat.id is None
        # Events the filter skipped move the resume point along with the next beat.
        skipped = await record(recorder, activity(1))
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(15.1)
        beat = await sub.block()
    assert beat.comments == ["keepalive"] and beat.id == skipped


async def test_the_api_key_is_required(manager, live):
    client = create_app(manager, api_key="k3y", live=live).test_client()
    response = await client.get("/events")
    assert response.status_code == 401
    assert (await response.get_json())["success"] is False
    async with subscribe(client, live, X_API_Key="k3y") as sub:
        assert (await sub.block()).retry == 3000
        assert sub.connection.status_code == 200


async def test_streams_beyond_the_cap_get_503(client, live):
    live.config = attrs.evolve(live.config, max_subscribers=1)
    async with subscribe(client, live) as sub:
        await sub.live()
        response = await client.get("/events")
        assert response.status_code == 503
        assert "max_subscribers" in (await response.get_json())["error"]


async def test_shutdown_ends_every_open_stream_at_once(client, live):
    async with subscribe(client, live) as one, subscribe(client, live) as two:
        await one.live()
        await two.live()
        live.close()
        for sub in (one, two):
            (bye,) = await sub.end()
            assert "shutting down" in bye.comments[0]
        assert live.open == 0


async def test_the_document_says_text_event_stream(client):
    document = await (await client.get("/openapi.json")).get_json()
    operation = document["paths"]["/events"]["get"]
    assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"]
    assert {p["name"] for p in operation["parameters"]} >= {"session_id", "types", "after"}
