"""Webhooks on the real server: the tables behave as on one node, a lane is held by one node at a time,
and a real HTTP receiver served by two nodes' dispatchers gets each event once, in order per lane,
also when one node dies mid-way and the other takes its lanes once their claims run out."""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator

import pytest
import trio

from tests.webhook_receiver import Answer, WebhookReceiver
from waservice.cluster.eventlog import PgEventLog
from waservice.cluster.eventstore import PgEventStore, open_pg_event_store
from waservice.cluster.lanes import PgLaneClaims
from waservice.cluster.webhooks import PgWebhookTables
from waservice.events.model import Activity
from waservice.store.webhooks import DeliveryResult, StoredWebhook
from waservice.webhooks.service import WebhookSpec

from .eventnode import EventNode, event_node

pytestmark = pytest.mark.cluster

WAIT = 90.0  # a safety net on a loaded box; every wait ends as soon as its condition holds


@pytest.fixture
async def store(url: str) -> AsyncIterator[PgEventStore]:
    async with open_pg_event_store(url, size=3) as store:
        yield store


def hook(id_: str, events: tuple[str, ...] = ("*",), session: str | None = None, source: str = "api"):
    return StoredWebhook(id_, f"http://127.0.0.1:9/{id_}", events, session, "whsec_x", time.time(), source)


def activity(session: str, n: int, type_: str = "message.received") -> Activity:
    return Activity(session_id=session, type=type_, timestamp=1_800_000_000 + n, data={"n": n})


async def test_the_tables_behave_as_on_one_node(store: PgEventStore) -> None:
    tables = PgWebhookTables(store.connection, "n1")
    store.add_outbox(tables.outbox)
    call = store.call
    await call(tables.create, hook("wh_all"))
    await call(tables.create, hook("wh_status", ("session.status",)))
    await call(tables.create, hook("wh_s2", ("message.received", "presence"), "s2"))
    assert await call(tables.count) == 3
    assert [w.id for w in await call(tables.enabled)] == ["wh_all", "wh_status", "wh_s2"]
    assert [w.id for w in await call(tables.enabled, "s2")] == ["wh_s2"]
    assert (await call(tables.get, "wh_s2")).events == ("message.received", "presence")

    logged = await store.append([activity("s1", 1), activity("s2", 2), activity("s1", 3, "session.status")])
    assert sorted(await call(tables.lanes_with_work)) == [
        ("wh_all", "s1"),
        ("wh_all", "s2"),
        ("wh_s2", "s2"),
        ("wh_status", "s1"),
    ]
    assert sorted(await call(tables.lanes_with_work, None, (2, 3))) == [("wh_all", "s1"), ("wh_status", "s1")]
    due = await call(tables.due, "wh_all", "s1", 10)
    assert [d.event for d in due] == [logged[0], logged[2]]
    assert due[0].body == b'{"id":1,"type":"message.received","session_id":"s1",' + (
        b'"timestamp":"2027-01-15T08:00:01.000Z","data":{"n":1}}'
    )
    now = time.time()
    await call(
        tables.record,
        [
            DeliveryResult("wh_all", 1, "ok", now, now, 200, None),
            DeliveryResult("wh_all", 3, "failed", now, now + 5, 500, "HTTP 500 " + "x" * 300),
        ],
    )
    page, total = await call(tables.deliveries, "wh_all", None, 10, 0)
    assert total == 3 and [(d.event_id, d.status) for d in page] == [(3, "failed"), (2, "pending"), (1, "ok")]
    assert page[0].next_attempt_at == now + 5 and len(page[0].last_error) == 200
    assert page[2].next_attempt_at is None and page[2].event_type == "message.received"
    (again,) = await call(tables.due, "wh_all", "s1", 10)
    assert (again.event.id, again.attempts, again.first_attempt_at) == (3, 1, now)
    await call(tables.record, [DeliveryResult("wh_all", 3, "dead", now, now, 500, "gave up")])
    assert await call(tables.redeliver, "wh_all", None) == 1
    assert (await call(tables.due, "wh_all", "s1", 10))[0].attempts == 0

    # The config file's webhooks: kept, updated, disabled when gone (not deleted).
    assert await call(tables.sync_config, [hook("wh_cfg", source="config")]) == []
    assert await call(tables.sync_config, []) == ["wh_cfg"]
    assert await call(tables.get, "wh_cfg") is None

    assert await call(tables.delete, "wh_all") is True
    assert await call(tables.delete, "wh_all") is False
    assert await call(tables.deliveries, "wh_all", None, 10, 0) == ([], 0)

    # Deliveries leave with their events.
    assert await store.prune(time.time() + 1) == 3
    assert await call(tables.prune) == 2  # wh_status's and wh_s2's
    assert await call(tables.lanes_with_work) == []


async def test_one_node_holds_a_lane_until_its_claim_runs_out(store: PgEventStore, url: str) -> None:
    async with open_pg_event_store(url, size=2) as other:
        a = PgLaneClaims(store, "a", ttl=1.0)
        b = PgLaneClaims(other, "b", ttl=1.0)
        results = {}

        async def hold(name: str, claims: PgLaneClaims) -> None:
            results[name] = await claims.hold("wh", "s1")

        async with trio.open_nursery() as nursery:  # a race: exactly one wins
            nursery.start_soon(hold, "a", a)
            nursery.start_soon(hold, "b", b)
        assert sorted(results.values()) == [False, True]
        winner, loser = (a, b) if results["a"] else (b, a)
        assert await winner.hold("wh", "s1") is True  # its own: extended
        assert await loser.renew([("wh", "s1")]) == set()
        assert await winner.renew([("wh", "s1"), ("wh", "s2")]) == {("wh", "s1")}
        # The loser's tables do not offer the lane while the winner's claim lives.
        log = PgEventLog(other.connection if loser is b else store.connection)
        tables = PgWebhookTables(log.db, loser.node_id)
        await store.call(PgWebhookTables(store.connection, "x").create, hook("wh"))
        store.add_outbox(PgWebhookTables(store.connection, "x").outbox)
        await store.append([activity("s1", 1)])
        assert await store.call(tables.lanes_with_work) == []
        with trio.fail_after(10):
            while not await loser.hold("wh", "s1"):  # the winner stopped renewing: ttl later
                await trio.sleep(0.2)
        assert await winner.hold("wh", "s1") is False
        assert await store.call(tables.lanes_with_work) == [("wh", "s1")]
        assert await loser.release_all() == 1
        assert await winner.hold("wh", "s1") is True  # released: at once


def receipts(receiver: WebhookReceiver) -> list[tuple[str, int]]:
    return [(r.event["session_id"], r.event["id"]) for r in receiver.received if 200 <= r.answered < 300]


def check_lane_order(receiver: WebhookReceiver) -> None:
    """Per session, each event's first delivery comes after the previous event's."""
    first: dict[str, list[int]] = collections.defaultdict(list)
    for session, event_id in receipts(receiver):
        if event_id not in first[session]:
            first[session].append(event_id)
    for session, ids in first.items():
        assert ids == sorted(ids), session


async def logged_ids(node: EventNode) -> list[int]:
    return [e.id for e in await node.store.after(0, 100_000)]


async def test_two_dispatchers_deliver_each_event_once(url: str) -> None:
    receiver = WebhookReceiver(secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    sessions, per_session = 6, 15
    async with trio.open_nursery() as outer:
        await outer.start(receiver.run)
        async with event_node(url, "a") as a, event_node(url, "b") as b:
            service = await a.start_dispatcher()
            await b.start_dispatcher()
            spec = WebhookSpec(receiver.url, ("*",), secret=receiver.secret)
            await service.create(spec)  # through node a: node b's dispatcher uses it too
            for n in range(per_session):
                for s in range(sessions):
                    await (a if s % 2 else b).emit(f"s{s}", n)
            total = sessions * per_session
            await receiver.wait_for(lambda r: len(receipts(receiver)) >= total, timeout=WAIT)
            await trio.sleep(0.5)  # a second copy of anything would arrive now
            ids = await logged_ids(a)
            holders = await a.store.call(
                a.store.connection.run,
                lambda conn: conn.execute("SELECT DISTINCT node FROM ws_webhook_lanes").fetchall(),
            )
        outer.cancel_scope.cancel()
    counted = collections.Counter(event_id for _, event_id in receipts(receiver))
    assert sorted(counted) == ids and len(ids) == total
    assert set(counted.values()) == {1}, [i for i, c in counted.items() if c > 1]
    assert len(receiver.received) == total  # no failed attempts either
    assert receiver.bad_signatures == 0
    assert all(int(r.webhook_id) == r.event["id"] for r in receiver.received)  # the same ids as on one node
    check_lane_order(receiver)
    assert holders  # lanes were claimed (by one node or both: whoever heard first)


async def test_a_dead_nodes_lanes_are_finished_by_another_after_their_claims_run_out(url: str) -> None:
    ttl = 3.0
    receiver = WebhookReceiver(default=Answer(delay=0.05))  # slow enough to die mid-way
    sessions, per_session = 4, 12
    total = sessions * per_session
    async with trio.open_nursery() as outer:
        await outer.start(receiver.run)
        async with event_node(url, "b", lane_ttl=ttl) as b:
            async with event_node(url, "a", lane_ttl=ttl) as a:
                service = await a.start_dispatcher()
                await service.create(WebhookSpec(receiver.url, ("*",)))
                for n in range(per_session):
                    for s in range(sessions):
                        await a.emit(f"s{s}", n)
                # Node a holds every lane (b's dispatcher is not running yet) and is under way.
                await receiver.wait_for(
                    lambda r: {s for s, _ in receipts(receiver)} == {f"s{i}" for i in range(4)}
                )
                await b.start_dispatcher()
                await receiver.wait_for(lambda r: len(r) >= total // 3)
                a.nursery.cancel_scope.cancel()  # node a dies: its claims stay until they run out
                died = trio.current_time()
                before = len(receiver.received)
            await receiver.wait_for(
                lambda r: {i for _, i in receipts(receiver)} >= set(range(1, total + 1)), timeout=WAIT
            )
            await trio.sleep(0.5)
            ids = await logged_ids(b)
        outer.cancel_scope.cancel()
    assert ids == list(range(1, total + 1))
    assert before < total  # it did die mid-way
    counted = collections.Counter(event_id for _, event_id in receipts(receiver))
    assert sorted(counted) == ids
    # At most the attempt in flight on each of a's lanes when it died goes twice (never recorded).
    assert sum(c - 1 for c in counted.values()) <= sessions
    check_lane_order(receiver)
    # b waited for a's claims (renewed every ttl/3, so at least 2/3 of ttl left) before taking over.
    after = [r.at - died for r in receiver.received if r.at > died + 0.5]
    assert after and min(after) >= ttl * 2 / 3 - 0.5


async def test_a_lane_another_node_took_stops_here_before_its_next_attempt(url: str) -> None:
    receiver = WebhookReceiver()
    receiver.script(Answer(500))  # the first attempt fails: the retry is due about 5 s later
    async with trio.open_nursery() as outer:
        await outer.start(receiver.run)
        async with event_node(url, "a", lane_ttl=3.0) as a:
            service = await a.start_dispatcher()
            webhook, _ = await service.create(WebhookSpec(receiver.url, ("*",)))
            await a.emit("s1", 1)
            await receiver.wait_for(lambda r: len(r) == 1, timeout=WAIT)
            # Another node has the lane now (as after a partition that outlasted a's claim).
            await a.store.call(
                a.store.connection.run,
                lambda conn: conn.execute(
                    "UPDATE ws_webhook_lanes SET node = 'b', until = now() + interval '1 h'"
                ),
            )
            with trio.move_on_after(9):  # past the retry's time
                await receiver.wait_for(lambda r: len(r) > 1)
            assert len(receiver.received) == 1  # a sent nothing more: the lane is b's
            assert a.dispatcher is not None and a.dispatcher.lanes() == 0
            _, still_open = await a.store.call(a.tables.deliveries, webhook.id, "failed", 10, 0)
            assert still_open == 1  # for b to send
        outer.cancel_scope.cancel()


async def test_a_redeliver_on_one_node_is_sent_at_once_by_the_node_holding_the_lane(url: str) -> None:
    receiver = WebhookReceiver()
    receiver.script(Answer(410))  # gone: dead at the first attempt
    async with trio.open_nursery() as outer:
        await outer.start(receiver.run)
        async with event_node(url, "a") as a, event_node(url, "b") as b:
            on_b = await b.start_dispatcher()  # b alone delivers: it holds the lane (for 30 s)
            webhook, _ = await on_b.create(WebhookSpec(receiver.url, ("*",)))
            await b.emit("s1", 1)
            await receiver.wait_for(lambda r: len(r) == 1, timeout=WAIT)
            with trio.fail_after(WAIT):
                while (await on_b.deliveries(webhook.id, "dead", 10, 0))[1] != 1:
                    await trio.sleep(0.05)
            on_a = await a.start_dispatcher()
            assert await on_a.redeliver(webhook.id, None) == 1  # answered by a, whose lanes have nothing
            asked = trio.current_time()
            await receiver.wait_for(lambda r: len(r) == 2, timeout=WAIT)
            # b was told (NOTIFY), not found by its next look for work (every 10 s).
            assert receiver.received[1].at - asked < 5.0
            assert receiver.received[1].event["id"] == 1
        outer.cancel_scope.cancel()
