"""The cluster's event log on the real server: the EventLog contract (dedup, outboxes in the append's
transaction, pruning that never reuses an id), and ids that become visible in order while several
nodes append at once, so a follower reading `id > cursor` never misses one."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Sequence

import psycopg
import pytest
import trio

from waservice.cluster.database import Database
from waservice.cluster.eventlog import PgEventLog
from waservice.cluster.eventstore import PgEventStore
from waservice.cluster.migrations import migrate
from waservice.errors import StorageFailed
from waservice.events.model import Activity, LoggedEvent

pytestmark = pytest.mark.cluster


def activity(session: str, n: int, key: str | None = None, type_: str = "message.received") -> Activity:
    return Activity(session_id=session, type=type_, timestamp=1_700_000_000 + n, data={"n": n}, key=key)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with Database.open(database_url, size=4) as db:
        await db.call(migrate)
        yield db


async def test_append_read_back_and_dedup(db: Database) -> None:
    store = PgEventStore(PgEventLog(db))
    assert await store.last_id() == 0
    first = await store.append([activity("a", 1, "m1"), activity("b", 2), activity("a", 3, "m1")])
    assert [(e.id, e.session_id, e.data) for e in first] == [(1, "a", {"n": 1}), (2, "b", {"n": 2})]
    assert first[0].timestamp == "2023-11-14T22:13:21.000Z"
    again = await store.append([activity("a", 4, "m1"), activity("a", 5, "m2")])
    assert [e.data["n"] for e in again] == [5]
    assert again[0].id > 2  # the duplicate's id is left unused, never given to a later event
    assert await store.last_id() == again[0].id
    assert [e.id for e in await store.after(0, 10)] == [1, 2, again[0].id]
    assert [e.id for e in await store.after(0, 10, session_id="a")] == [1, again[0].id]
    assert await store.after(0, 10, types=["session.status"]) == []
    assert await store.get(2) == first[1]
    assert await store.get(99) is None


async def test_outboxes_run_in_the_append_transaction(db: Database) -> None:
    store = PgEventStore(PgEventLog(db))
    await db.call(lambda conn: conn.execute("CREATE TABLE seen (id bigint)"))
    calls: list[tuple[list[int], list[str]]] = []
    failing = False

    def outbox(conn: psycopg.Connection, logged: Sequence[LoggedEvent], sources: Sequence[Activity]) -> None:
        calls.append(([e.id for e in logged], [a.session_id for a in sources]))
        for event in logged:
            conn.execute("INSERT INTO seen VALUES (%s)", (event.id,))
        if failing:
            raise psycopg.errors.CheckViolation("refused")

    store.add_outbox(outbox)
    await store.append([activity("a", 1), activity("b", 2)])
    assert calls == [([1, 2], ["a", "b"])]
    failing = True
    with pytest.raises(StorageFailed):
        await store.append([activity("c", 3)])
    # Neither the event nor the outbox's row: one transaction.
    assert await store.last_id() == 2
    assert await db.call(lambda conn: conn.execute("SELECT id FROM seen ORDER BY id").fetchall()) == [
        (1,),
        (2,),
    ]


async def test_pruning_keeps_the_last_id(db: Database) -> None:
    store = PgEventStore(PgEventLog(db))
    await store.append([activity("a", n) for n in range(5)])
    assert await store.prune(time.time() + 1) == 5
    assert await store.after(0, 10) == []
    assert await store.last_id() == 5
    (event,) = await store.append([activity("a", 9)])
    assert event.id == 6


async def test_a_notify_carries_the_new_last_id(db: Database, database_url: str) -> None:
    store = PgEventStore(PgEventLog(db))
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN ws_events")
        await store.append([activity("a", 1), activity("a", 2)])
        await store.append([activity("a", 1, "k"), activity("a", 1, "k")])
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
    assert payloads == ["2", "3"]


async def test_concurrent_appenders_ids_become_visible_in_order(database_url: str) -> None:
    """Three nodes append from threads while a follower reads `id > cursor` without pause: it must
    see every id exactly once, in order. Without the head lock, an id taken by one transaction
    commits after a larger one of another and the follower skips it."""
    appenders, batches, per_batch = 3, 60, 5
    done = threading.Event()
    seen: list[int] = []

    def append_all(log: PgEventLog, node: int) -> None:
        for b in range(batches):
            log.append([activity(f"n{node}", b * per_batch + i) for i in range(per_batch)])

    def follow(log: PgEventLog) -> None:
        cursor = 0
        while True:
            finished = done.is_set()  # read before the page: a page after the end sees everything
            for event in log.after(cursor, 1000):
                assert event.id > cursor
                seen.append(event.id)
                cursor = event.id
            if finished:
                return

    async with Database.open(database_url, size=2) as first:
        await first.call(migrate)
        async with (
            Database.open(database_url, size=2) as second,
            Database.open(database_url, size=2) as third,
            Database.open(database_url, size=2) as reader,
        ):
            logs = [PgEventLog(d) for d in (first, second, third)]
            async with trio.open_nursery() as followers:
                followers.start_soon(trio.to_thread.run_sync, follow, PgEventLog(reader))
                async with trio.open_nursery() as nursery:
                    for node, log in enumerate(logs):
                        nursery.start_soon(trio.to_thread.run_sync, append_all, log, node)
                done.set()
            everything = [e.id for e in PgEventLog(reader).after(0, 10_000)]
    assert len(everything) == appenders * batches * per_batch
    assert everything == sorted(everything)
    assert seen == everything
