"""`ClusterKeys` on the real server, two nodes on one database: a key made on one is accepted by the
other, a key deleted on one is refused by the other, a deleted session takes its keys along."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import psycopg
import pytest
import trio

from tests.cluster.conftest import PostgresServer
from waservice.cluster.database import Database
from waservice.cluster.keys import ClusterKeys
from waservice.cluster.notify import Backoff, Listener
from waservice.errors import StorageFailed
from waservice.store.keys import KEY_PREFIX

pytestmark = pytest.mark.cluster

WAIT = 15.0  # an upper bound on a loaded box; each wait ends as soon as the condition holds


def sql(url: str, query: str, *args: object) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(query, args)


@pytest.fixture
def url(url: str) -> str:
    """With two sessions registered."""
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO ws_sessions (id) VALUES ('s1'), ('s2')")
    return url


@asynccontextmanager
async def node(url: str, reload_every: float = 30.0) -> AsyncIterator[ClusterKeys]:
    """One node's keys, following the others' changes, as server.py runs them."""
    async with Database.open(url, size=2) as database, trio.open_nursery() as nursery:
        listener = Listener(url, poll_interval=0.1, backoff=Backoff(initial=0.05, maximum=0.5))
        await nursery.start(listener.run)
        keys = await ClusterKeys.open(database)
        await nursery.start(
            lambda task_status: keys.run(listener, reload_every=reload_every, task_status=task_status)
        )
        yield keys
        nursery.cancel_scope.cancel()


async def eventually(condition: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT):
        while not condition():
            await trio.sleep(0.02)


async def test_a_key_made_on_one_node_is_accepted_by_the_other(url: str) -> None:
    async with node(url) as a, node(url) as b:
        new = await a.create("s1")
        assert new is not None and new.key.startswith(f"{KEY_PREFIX}{new.stored.key_id}_")
        assert a.check(new.key) == new.stored  # at once on the node that made it
        await eventually(lambda: b.check(new.key) == new.stored)
        assert b.list("s1") == [new.stored] and b.list("s2") == []
        assert b.check(new.key[:-1] + ("x" if new.key[-1] != "x" else "y")) is None  # wrong secret
        assert b.check("not a key") is None


async def test_a_key_deleted_on_one_node_is_refused_by_the_other(url: str) -> None:
    async with node(url) as a, node(url) as b:
        kept, gone = await a.create("s1"), await a.create("s1")
        assert kept is not None and gone is not None
        await eventually(lambda: b.check(gone.key) is not None and b.check(kept.key) is not None)
        assert await b.delete("s2", gone.stored.key_id) is False  # another session's key
        assert await b.delete("s1", gone.stored.key_id) is True
        assert b.check(gone.key) is None  # at once where it was deleted
        await eventually(lambda: a.check(gone.key) is None)
        assert a.check(kept.key) == kept.stored
        assert [k.key_id for k in a.list("s1")] == [kept.stored.key_id]


async def test_deleting_the_session_row_removes_its_keys_everywhere(url: str) -> None:
    async with node(url) as a, node(url) as b:
        doomed, other = await a.create("s1"), await a.create("s2")
        assert doomed is not None and other is not None
        await eventually(lambda: b.check(doomed.key) is not None and b.check(other.key) is not None)
        await trio.to_thread.run_sync(sql, url, "DELETE FROM ws_sessions WHERE id = 's1'")
        await eventually(lambda: a.check(doomed.key) is None and b.check(doomed.key) is None)
        assert b.check(other.key) == other.stored
        assert await a.create("s1") is None  # unregistered now


async def test_no_key_for_an_unregistered_session(url: str) -> None:
    async with node(url) as a:
        assert await a.create("nobody") is None
        assert a.list("nobody") == []


async def test_forget_session_refuses_its_keys_at_once(url: str) -> None:
    async with node(url) as a:
        new = await a.create("s1")
        assert new is not None
        a.forget_session("s1")
        assert a.check(new.key) is None


async def test_a_change_nobody_was_told_about_is_found_by_the_periodic_reload(url: str) -> None:
    async with node(url) as a, node(url, reload_every=0.3) as b:
        new = await a.create("s1")
        assert new is not None
        await eventually(lambda: b.check(new.key) is not None)

        def delete_silently() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SET session_replication_role = replica")  # no triggers: no NOTIFY
                conn.execute("DELETE FROM ws_session_keys")

        await trio.to_thread.run_sync(delete_silently)
        await eventually(lambda: b.check(new.key) is None)  # the safety net
        assert a.check(new.key) is not None  # still cached: a waits its 30 s


def admin(server: PostgresServer, query: str) -> None:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(query)


async def test_a_change_made_while_the_listeners_were_down_is_loaded_after_their_resync(
    url: str, postgres_server: PostgresServer
) -> None:
    name = url.rsplit("/", 1)[1]
    async with node(url) as a, node(url) as b:  # b reloads every 30 s: only a Resync can explain it
        # The pools keep their open connections; the listeners lose theirs and cannot come back.
        await trio.to_thread.run_sync(
            admin, postgres_server, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'
        )
        await trio.to_thread.run_sync(
            admin,
            postgres_server,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE application_name = 'waservice-listener' AND datname = '{name}'",
        )
        new = await a.create("s1")  # its NOTIFY reaches no one
        assert new is not None
        await trio.sleep(0.5)  # several of the listeners' reconnect attempts
        assert b.check(new.key) is None
        await trio.to_thread.run_sync(
            admin, postgres_server, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'
        )
        await eventually(lambda: b.check(new.key) == new.stored)


async def test_a_failed_write_is_a_storage_failure_not_a_crash(url: str) -> None:
    async with node(url) as a:
        await trio.to_thread.run_sync(sql, url, "DROP TABLE ws_session_keys")
        with pytest.raises(StorageFailed):
            await a.create("s1")
