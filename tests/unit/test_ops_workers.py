"""/ready and the worker metrics on the real worker pool (issue 11 items 1 and 2): a worker that
keeps crashing makes the service unready, and its restarts are counted by cause."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from tests.simulator.engine_harness import pool_on
from tests.unit.calls import call
from tests.unit.test_ops import scrape
from waservice.api.app import create_app
from waservice.engine.pool import WorkerPool
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager
from waservice.store import open_store

pytestmark = [pytest.mark.simulator]


async def until_running(pool: WorkerPool, not_pid: int | None = None) -> int:
    """The pid of worker 0 once a process other than `not_pid` runs it."""
    slot = pool._slots[0]
    with trio.fail_after(60):
        while slot.live is None or slot.live.process.pid == not_pid:
            await slot.changed.wait()
    return slot.live.process.pid


async def test_a_crash_looping_worker_makes_the_service_unready(patched_dir: Path, tmp_path: Path):
    async with (
        pool_on(patched_dir, workers=1, restart_delay=300.0) as pool,
        open_store(tmp_path / "data") as store,
        trio.open_nursery() as nursery,
    ):
        manager = await nursery.start(SessionManager(pool, store, ReconnectPolicy()).run)
        client = create_app(manager).test_client()
        first = await until_running(pool)  # the pool reports ready at once; the worker takes a moment
        assert await call(client, "get", "/ready") == (200, {"success": True, "ready": True})
        m = await scrape(client)
        assert m["waservice_worker_up", (("worker", "0"),)] == 1
        assert m["waservice_worker_open_fds", (("worker", "0"),)] > 3
        assert m["waservice_worker_resident_memory_bytes", (("worker", "0"),)] > 10e6

        os.kill(first, signal.SIGKILL)  # the first crash restarts at once
        os.kill(await until_running(pool, not_pid=first), signal.SIGKILL)  # the second waits restart_delay
        slot = pool._slots[0]
        with trio.fail_after(60):
            while slot.down_reason is None:
                await slot.changed.wait()
        status, body = await call(client, "get", "/ready")
        assert (status, body["ready"]) == (503, False), body
        assert body["reasons"] == ["no engine worker is running (worker 0 restarting)"]
        m = await scrape(client)
        assert m["waservice_worker_up", (("worker", "0"),)] == 0
        assert m["waservice_worker_restarts_total", (("cause", "crashed"),)] == 2
        assert m["waservice_worker_restarts_total", (("cause", "unresponsive"),)] == 0
        nursery.cancel_scope.cancel()
