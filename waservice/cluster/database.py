"""PostgreSQL from trio: psycopg 3's synchronous pool, driven through trio worker threads.

psycopg's async API needs asyncio (facts-scale.md section 3, measured), so every query runs in a
worker thread. The threads come from a limiter of our own, as large as the pool, so database calls
neither queue behind other thread users nor wait inside the pool for a connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import psycopg
import psycopg_pool
import trio

T = TypeVar("T")


# A server that stops answering (a partition) fails queries in seconds, not after TCP's retries.
_DEAD_PEER = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms unacknowledged before the connection is dropped
}


class DatabaseError(Exception):
    """A query failed on the server (a constraint, bad SQL): the database itself is reachable."""


class DatabaseUnavailable(DatabaseError):
    """No connection could be had or kept: the server is down, unreachable, or the pool is exhausted."""


def _translate(error: Exception) -> DatabaseError:
    if isinstance(error, psycopg_pool.PoolTimeout | psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailable(f"PostgreSQL unavailable: {error}")
    return DatabaseError(f"PostgreSQL error: {error}")


class Database:
    """A connection pool whose `call` runs one function in one transaction on a worker thread."""

    def __init__(self, pool: psycopg_pool.ConnectionPool, size: int) -> None:
        self._pool = pool
        self.size = size
        self._limiter = trio.CapacityLimiter(size)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, *, size: int = 4, connect_timeout: float = 5.0, acquire_timeout: float = 10.0
    ) -> AsyncIterator[Database]:
        """Open the pool and wait for its first connection, so a wrong URL fails here, not later."""
        pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=size,
            open=False,
            timeout=acquire_timeout,
            kwargs={"connect_timeout": max(1, round(connect_timeout)), **_DEAD_PEER},
            name="waservice",
        )

        def open_pool() -> None:
            try:
                pool.open(wait=True, timeout=connect_timeout)
            except Exception as error:
                pool.close()
                raise _translate(error) from error

        await trio.to_thread.run_sync(open_pool)
        try:
            yield cls(pool, size)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(pool.close)

    async def call(self, fn: Callable[..., T], *args: object, abandon_on_cancel: bool = False) -> T:
        """Run ``fn(connection, *args)`` in a transaction: committed if it returns, rolled back if it raises.

        psycopg errors come out as `DatabaseUnavailable` (connection trouble) or `DatabaseError`;
        any other exception from ``fn`` passes through unchanged after the rollback.
        `abandon_on_cancel`: a cancelled caller stops waiting at once (a partitioned server can hold a
        query for as long as TCP retries); the thread finishes, or fails, on its own.
        """

        return await trio.to_thread.run_sync(
            self.run, fn, *args, limiter=self._limiter, abandon_on_cancel=abandon_on_cancel
        )

    def run(self, fn: Callable[..., T], *args: object) -> T:
        """`call` for code already on a worker thread (it blocks): ``fn(connection, *args)`` in a
        transaction, with the same errors. The caller bounds its own threads (the event store's
        limiters) so that they never wait inside the pool."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                return fn(conn, *args)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            raise _translate(error) from error
