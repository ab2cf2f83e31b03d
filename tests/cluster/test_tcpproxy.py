"""The cuttable TCP proxy in front of the real PostgreSQL: it forwards, a stall is a partition (timeouts,
and the held query resumes once healed), a reset fails clients at once, and unblocking restores it."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import psycopg
import pytest
import trio

from tests.cluster.tcpproxy import TcpProxy, open_proxy

pytestmark = pytest.mark.cluster

CONNECT_TIMEOUT = 2  # psycopg rounds lower values up to 2 s
STALLED = 1.0  # how long a query must hang to count as stalled (a local query takes milliseconds)


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT, autocommit=True)


class Query(threading.Thread):
    """A query on its own thread, so the test can see it hang and later finish."""

    def __init__(self, conn: psycopg.Connection, sql: str) -> None:
        super().__init__(daemon=True)
        self.conn, self.sql = conn, sql
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            row = self.conn.execute(self.sql).fetchone()
            self.result = row[0] if row else None
        except BaseException as exc:  # reported to the test through .error
            self.error = exc


def test_forwards_then_stalls_like_a_partition_then_heals(database_url: str) -> None:
    with TcpProxy.to_url(database_url) as proxy:
        assert str(proxy.port) in proxy.url and proxy.url != database_url
        with connect(proxy.url) as conn:
            assert conn.execute("SELECT 41 + 1").fetchone() == (42,)

            proxy.block()
            assert proxy.mode == "stall"
            held = Query(conn, "SELECT 'after the partition'")
            held.start()
            held.join(STALLED)
            assert held.is_alive(), "a query crossed the partition"

            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError, match="timeout"):
                connect(proxy.url)
            assert time.monotonic() - started >= CONNECT_TIMEOUT * 0.9  # a timeout, not a refusal

            proxy.unblock()
            held.join(10)
            assert not held.is_alive() and held.error is None
            assert held.result == "after the partition"  # TCP resumed: the held bytes went through
        with connect(proxy.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert proxy.accepted == 3


def test_reset_mode_fails_clients_at_once(database_url: str) -> None:
    with TcpProxy.to_url(database_url) as proxy, connect(proxy.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        proxy.block("reset")
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 2")
        with pytest.raises(psycopg.OperationalError):
            connect(proxy.url)
        assert time.monotonic() - started < CONNECT_TIMEOUT  # errors, not timeouts
        proxy.unblock()
        with connect(proxy.url) as fresh:
            assert fresh.execute("SELECT 3").fetchone() == (3,)


def test_block_rejects_an_unknown_mode(database_url: str) -> None:
    with TcpProxy.to_url(database_url) as proxy:
        with pytest.raises(ValueError, match="stall"):
            proxy.block("drop")  # type: ignore[arg-type]
        assert proxy.mode is None


async def test_inside_a_trio_test(database_url: str) -> None:
    target = urlsplit(database_url)
    assert target.hostname is not None and target.port is not None
    port = target.port
    async with open_proxy(target.hostname, port) as proxy:
        url = database_url.replace(f":{port}/", f":{proxy.port}/")

        def select(sql: str) -> object:
            with connect(url) as conn:
                row = conn.execute(sql).fetchone()
                return row[0] if row else None

        assert await trio.to_thread.run_sync(select, "SELECT 5") == 5
        proxy.block()
        with trio.move_on_after(STALLED) as stalled:
            await trio.to_thread.run_sync(select, "SELECT 6", abandon_on_cancel=True)
        assert stalled.cancelled_caught and proxy.open_connections >= 1
        proxy.unblock()
        assert await trio.to_thread.run_sync(select, "SELECT 7") == 7
