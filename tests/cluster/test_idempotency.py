"""`PostgresIdempotencyTable` on the real server: an answer one node stored is found by another, which
then answers a retried keyed send from it instead of sending twice (a failover); expiry and prune."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import psycopg
import pytest
import trio

from tests.unit.calls import call, wait_state
from waservice.api.app import create_app
from waservice.api.idempotency import IdempotencyKeys
from waservice.cluster.database import Database
from waservice.cluster.idempotency import PostgresIdempotencyTable
from waservice.engine.fake import FakeEngine
from waservice.errors import StorageFailed
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager
from waservice.store import open_store
from waservice.store.idempotency import StoredAnswer

pytestmark = pytest.mark.cluster

SLOT = ("admin", "s1", "k-1")
BODY = {"session_id": "s1", "number": "12025550143", "message": "hello"}


@asynccontextmanager
async def table(url: str) -> AsyncIterator[PostgresIdempotencyTable]:
    async with Database.open(url, size=2) as database:
        yield PostgresIdempotencyTable(database)


async def test_an_answer_stored_by_one_node_is_found_by_another(url: str) -> None:
    answer = StoredAnswer(b"\x01fingerprint", 200, b'{"success": true}', time.time())
    async with table(url) as a, table(url) as b:
        assert await b.get(*SLOT, time.time() - 60) is None
        await a.put(*SLOT, answer)
        assert await b.get(*SLOT, time.time() - 60) == answer
        assert await b.get("key:abc", "s1", "k-1", time.time() - 60) is None  # another caller's


async def test_expired_answers_are_ignored_replaced_and_pruned(url: str) -> None:
    now = time.time()
    old = StoredAnswer(b"f", 200, b"{}", now - 100)
    async with table(url) as a, table(url) as b:
        await a.put(*SLOT, old)
        await a.put("admin", "s1", "k-2", StoredAnswer(b"g", 201, b"[]", now))
        assert await b.get(*SLOT, now - 200) == old
        assert await b.get(*SLOT, now - 50) is None  # older than the TTL
        assert await b.prune(now - 50) == 1
        assert await a.get(*SLOT, now - 200) is None
        assert await a.get("admin", "s1", "k-2", now - 200) is not None
        fresh = StoredAnswer(b"h", 202, b"{}", now)
        await a.put(*SLOT, old)
        await b.put(*SLOT, fresh)  # an expired row the pruner has not reached yet is replaced
        assert await a.get(*SLOT, now - 200) == fresh


async def test_a_broken_table_is_a_storage_failure(url: str) -> None:
    async with table(url) as a:
        await a.put(*SLOT, StoredAnswer(b"f", 200, b"{}", time.time()))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE ws_idempotency_keys")
        with pytest.raises(StorageFailed):
            await a.get(*SLOT, 0.0)


@attrs.frozen
class Node:
    client: object
    engine: FakeEngine


@asynccontextmanager
async def node(data: Path, url: str) -> AsyncIterator[Node]:
    """One node's API on the fake engine, its idempotency keys on the shared PostgreSQL."""
    engine = FakeEngine()
    async with (
        open_store(data) as store,
        Database.open(url, size=2) as database,
        trio.open_nursery() as nursery,
    ):
        manager = await nursery.start(SessionManager(engine, store, ReconnectPolicy()).run)
        keys = IdempotencyKeys(PostgresIdempotencyTable(database))
        client = create_app(manager, idempotency=keys).test_client()
        assert (await call(client, "post", "/connect", json={"session_id": "s1"}))[0] == 200
        await wait_state(client, "s1", "qr_ready")
        engine.clients["s1"].scan("573001234567")
        await wait_state(client, "s1", "connected")
        yield Node(client, engine)
        await manager.stop(trio.current_time() + 5)
        nursery.cancel_scope.cancel()


async def send(at: Node, key: str, body: dict = BODY) -> tuple[int, dict, dict]:
    response = await at.client.post("/send", json=body, headers={"Idempotency-Key": key})
    return response.status_code, await response.get_json(), response.headers


async def test_the_new_owner_answers_a_retry_from_the_old_owners_answer(tmp_path: Path, url: str) -> None:
    async with node(tmp_path / "a", url) as a, node(tmp_path / "b", url) as b:
        first = await send(a, "k-failover")
        assert first[0] == 200
        again = await send(b, "k-failover")  # the retry lands on the session's next owner
        assert again[:2] == first[:2] and again[2]["Idempotent-Replayed"] == "true"
        assert [m.text for m in a.engine.clients["s1"].sent] == ["hello"]
        assert not b.engine.clients["s1"].sent  # nothing sent twice
        other = await send(b, "k-failover", {**BODY, "message": "other"})
        assert other[0] == 422 and not b.engine.clients["s1"].sent


async def test_an_unreachable_answer_table_is_a_503_not_a_send(tmp_path: Path, url: str) -> None:
    async with node(tmp_path / "a", url) as a:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE ws_idempotency_keys")
        status, body, _ = await send(a, "k-broken")
        assert status == 503 and body["success"] is False
        assert not a.engine.clients["s1"].sent  # it could not know whether it was a retry
