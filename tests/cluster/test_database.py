"""`Database` on the real server: one transaction per call, worker threads bounded by the pool's size,
and connection trouble reported as `DatabaseUnavailable`."""

from __future__ import annotations

import socket
import threading
import time

import psycopg
import pytest
import trio

from waservice.cluster.database import Database, DatabaseError, DatabaseUnavailable

pytestmark = pytest.mark.cluster


async def test_a_call_commits_when_it_returns_and_rolls_back_when_it_raises(database_url: str) -> None:
    async with Database.open(database_url, size=2) as db:
        await db.call(lambda conn: conn.execute("CREATE TABLE t (x int)"))
        await db.call(lambda conn, x: conn.execute("INSERT INTO t VALUES (%s)", (x,)), 1)

        def insert_then_fail(conn: psycopg.Connection) -> None:
            conn.execute("INSERT INTO t VALUES (2)")
            raise KeyError("boom")

        with pytest.raises(KeyError):
            await db.call(insert_then_fail)
        rows = await db.call(lambda conn: conn.execute("SELECT x FROM t").fetchall())
        assert rows == [(1,)]


async def test_server_errors_are_database_errors_not_unavailability(database_url: str) -> None:
    async with Database.open(database_url, size=1) as db:
        with pytest.raises(DatabaseError) as caught:
            await db.call(lambda conn: conn.execute("SELECT * FROM no_such_table"))
        assert not isinstance(caught.value, DatabaseUnavailable)
        assert isinstance(caught.value.__cause__, psycopg.errors.UndefinedTable)
        assert await db.call(lambda conn: conn.execute("SELECT 7").fetchone()[0]) == 7


async def test_no_server_at_the_url_is_unavailable_at_open() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: the connection is refused
        with pytest.raises(DatabaseUnavailable, match="unavailable"), trio.fail_after(10):
            async with Database.open(f"postgresql://postgres@127.0.0.1:{port}/x", connect_timeout=2):
                pass


async def test_a_connection_killed_mid_call_is_unavailable(database_url: str) -> None:
    async with Database.open(database_url, size=1) as db:
        pid = await db.call(lambda conn: conn.info.backend_pid)
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(DatabaseUnavailable):
            await db.call(lambda conn: conn.execute("SELECT 1"))


async def test_calls_run_in_parallel_threads_up_to_the_pool_size_and_no_further(database_url: str) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def slow(conn: psycopg.Connection) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        conn.execute("SELECT pg_sleep(0.2)")
        with lock:
            running -= 1

    async with Database.open(database_url, size=3) as db:
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(db.call, slow)
        elapsed = time.monotonic() - started
    assert peak == 3
    assert 0.4 <= elapsed < 1.2  # two waves of three, not six in a row
