"""Nodes in one process on the real PostgreSQL, each with its own fake engine and session manager:
ownership, failover, the watchdog, drain, restarts, and the lease check on a replaced connection.

The fake engine keeps a device's pairing in the session folder, so the nodes share one data
directory here, as they share whatsmeow's keys in PostgreSQL in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest
import trio

from waservice.cluster.database import Database
from waservice.cluster.keys import ClusterKeys
from waservice.cluster.locator import ClusterLocator
from waservice.cluster.node import ClusterNode
from waservice.cluster.store import ClusterSessionStore
from waservice.engine.fake import FakeEngine
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager

pytestmark = pytest.mark.cluster

TTL = 2.0  # renewals every 0.5 s, the watchdog at 1.5 s
POLICY = ReconnectPolicy(initial_delay=0.05, factor=1.0, max_delay=0.05, max_attempts=100)


class Node:
    def __init__(self, node_id: str, manager: SessionManager, node: ClusterNode, engine: FakeEngine) -> None:
        self.id = node_id
        self.manager = manager
        self.node = node
        self.engine = engine
        self.scope = trio.CancelScope()

    def running(self) -> set[str]:
        return {s.session_id for s in self.manager.sessions()}

    def connected(self) -> set[str]:
        return {s.session_id for s in self.manager.sessions() if s.machine.state.value == "connected"}


@asynccontextmanager
async def open_node(url: str, data_dir: Path, node_id: str, *, ttl: float = TTL) -> AsyncIterator[Node]:
    """A node running until the block ends or its scope is cancelled (a crash: no goodbye)."""
    async with Database.open(url, size=4) as db, trio.open_nursery() as nursery:
        node = ClusterNode(db, node_id, f"http://{node_id}.test", ttl)
        store = await ClusterSessionStore.open(data_dir, node, await ClusterKeys.open(db))
        engine = FakeEngine()
        manager = SessionManager(
            engine,
            store,
            POLICY,
            still_mine=node.still_mine,
            record=node.record,  # type: ignore[arg-type]
        )
        handle = Node(node_id, manager, node, engine)

        async def run() -> None:
            with handle.scope:
                async with trio.open_nursery() as inner:
                    await inner.start(manager.run)
                    await inner.start(node.run, manager)

        nursery.start_soon(run)
        await wait_for(lambda: node.renewed_at > 0)
        try:
            yield handle
        finally:
            handle.scope.cancel()


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


async def pair(node: Node, session_id: str, phone: str) -> None:
    session = await node.manager.connect(session_id)
    await wait_for(lambda: session.machine.state.value == "qr_ready")
    node.engine.clients[session_id].scan(phone)
    await wait_for(lambda: session.machine.state.value == "connected")


def rows(url: str) -> dict[str, tuple[str | None, int, str]]:
    with psycopg.connect(url) as conn:
        return {
            r[0]: (r[1], r[2], r[3]) for r in conn.execute("SELECT id, owner, epoch, state FROM ws_sessions")
        }


async def test_a_new_session_is_owned_by_the_node_that_created_it(url: str, tmp_path: Path):
    async with open_node(url, tmp_path, "a") as a, open_node(url, tmp_path, "b") as b:
        await pair(a, "s1", "15550000001")
        await trio.sleep(TTL)  # several renewals of both: nothing moves
        assert "s1" in a.connected() and "s1" not in b.running()
        await wait_for(lambda: rows(url)["s1"][2] == "connected")  # written through
        owner, epoch, _ = rows(url)["s1"]
        assert (owner, epoch) == ("a", 1)


async def test_a_dead_nodes_sessions_reconnect_elsewhere_without_a_qr(url: str, tmp_path: Path):
    async with open_node(url, tmp_path, "b") as b:
        async with open_node(url, tmp_path, "a") as a:
            for n in range(4):
                await pair(a, f"s{n}", f"1555000000{n}")
            a.scope.cancel()  # killed: no release, the lease simply runs out
            killed_at = trio.current_time()
        await wait_for(lambda: b.connected() >= {"s0", "s1", "s2", "s3"})
        took = trio.current_time() - killed_at
        assert took >= TTL * 0.5, "taken over before the dead node's lease could end"
        assert all(qr == 0 for qr in (b.engine.clients[f"s{n}"].qr_codes_shown for n in range(4)))
        assert {sid: row[:2] for sid, row in rows(url).items() if sid != "default"} == {
            f"s{n}": ("b", 2) for n in range(4)
        }


async def test_a_node_that_cannot_renew_stops_its_sessions_before_its_lease_ends(url: str, tmp_path: Path):
    async with open_node(url, tmp_path, "a") as a:
        await pair(a, "s1", "15550000001")
        # The database "disappears" for this node: every renewal fails.
        a.node.db = _Unreachable()  # type: ignore[assignment]
        stopped_at = None
        with trio.fail_after(TTL * 2):
            while "s1" in a.running():
                await trio.sleep(0.01)
            stopped_at = trio.current_time()
        assert stopped_at - a.node.renewed_at < TTL, "still running when its lease may have ended"
        with psycopg.connect(url) as conn:  # the lease had not ended when the node stopped
            assert conn.execute("SELECT owner FROM ws_sessions WHERE id = 's1'").fetchone()[0] == "a"


async def test_drain_hands_every_session_over_and_the_node_takes_none_back(url: str, tmp_path: Path):
    async with open_node(url, tmp_path, "a") as a, open_node(url, tmp_path, "b") as b:
        for n in range(3):
            await pair(a, f"s{n}", f"1555000000{n}")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE ws_nodes SET draining = true WHERE node_id = 'a'")
        await wait_for(lambda: b.connected() >= {"s0", "s1", "s2"})
        assert not (a.running() & {"s0", "s1", "s2"})
        await trio.sleep(TTL)
        assert not (a.running() & {"s0", "s1", "s2"}), "a draining node took sessions back"


async def test_a_node_back_from_the_dead_takes_nothing_back(url: str, tmp_path: Path):
    async with open_node(url, tmp_path, "b") as b:
        async with open_node(url, tmp_path, "a") as a:
            await pair(a, "s1", "15550000001")
            a.scope.cancel()
        await wait_for(lambda: "s1" in b.connected())
        async with open_node(url, tmp_path, "a") as a2:
            await trio.sleep(TTL)
            assert "s1" not in a2.running() and "s1" in b.connected()


async def test_replaced_on_the_rightful_owner_reconnects(url: str, tmp_path: Path):
    async with open_node(url, tmp_path, "a") as a:
        await pair(a, "s1", "15550000001")
        session = a.manager.get("s1")
        a.engine.clients["s1"].replace()
        await wait_for(lambda: session.machine.reconnect_attempts >= 1)
        await wait_for(lambda: session.machine.state.value == "connected")


async def test_replaced_on_a_stale_owner_stops_without_touching_the_registry(url: str, tmp_path: Path):
    async with open_node(url, tmp_path, "a") as a:
        await pair(a, "s1", "15550000001")
        with psycopg.connect(url, autocommit=True) as conn:  # another node took it meanwhile
            conn.execute("INSERT INTO ws_nodes (node_id, url, lease_until) VALUES ('b', 'x', now() + '1 h')")
            conn.execute("UPDATE ws_sessions SET owner = 'b', epoch = epoch + 1 WHERE id = 's1'")
        session = a.manager.get("s1")
        a.engine.clients["s1"].replace()
        await wait_for(lambda: "s1" not in a.running())
        assert session.machine.state.value == "disconnected"
        assert rows(url)["s1"][0] == "b"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT autoconnect FROM ws_sessions WHERE id = 's1'").fetchone()[0]


async def test_the_locator_places_a_new_session_on_the_least_loaded_node(url: str, tmp_path: Path):
    async with open_node(url, tmp_path, "a") as a, open_node(url, tmp_path, "b") as b:
        await pair(a, "s1", "15550000001")
        await wait_for(lambda: rows(url)["s1"][0] == "a")
        # "default" went to one of them; s1 is a's: b is the least loaded, or level with a.
        target_a = await ClusterLocator(a.node).owner("new", create=True)
        loads = {n: sum(1 for r in rows(url).values() if r[0] == n) for n in ("a", "b")}
        expected = min(loads, key=lambda n: (loads[n], n))
        assert (target_a.node_id if target_a else "a") == expected
        owner = await ClusterLocator(b.node).owner("s1", create=False)
        assert owner is not None and owner.node_id == "a" and owner.url == "http://a.test"
        assert await ClusterLocator(b.node).owner("nope", create=False) is None


class _Unreachable:
    async def call(self, *args: object, **kwargs: object) -> object:
        from waservice.cluster.database import DatabaseUnavailable

        await trio.sleep(0)
        raise DatabaseUnavailable("PostgreSQL unavailable: the test cut it off")
