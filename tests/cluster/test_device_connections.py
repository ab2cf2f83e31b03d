"""PostgreSQL connections held by the workers' devices (facts-scale.md section 2): about two per
connected session, one more left behind by every connection attempt (goneonize opens a store per
Neonize() and never closes it), and all of a worker's freed when the pool recycles it.

WASERVICE_DEVICE_SESSIONS=10 measures with more sessions; the numbers are printed (`-s`).
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
import trio

from tests.cluster.test_device_store import registry, start, stop
from tests.simulator.conftest import sim  # noqa: F401 (the simulator fixture, per test)
from tests.simulator.engine_harness import pair, pool_on
from tests.wasim import Simulator
from waservice.cluster.database import Database
from waservice.cluster.devices import PostgresDevices
from waservice.engine import Connected
from waservice.engine.pool import WorkerPool

pytestmark = [pytest.mark.cluster, pytest.mark.simulator, pytest.mark.trio]

SESSIONS = int(os.environ.get("WASERVICE_DEVICE_SESSIONS", "4"))
OURS = "ws-test"  # the test's own connections (the registry's pool), told apart by application_name


def phone(i: int) -> str:
    return f"1555300{i:04d}"


def local_tcp_ports(pid: int) -> set[int]:
    """The local ports of a process's TCP sockets, from /proc (no psutil here)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def backends(conn: psycopg.Connection) -> list[int]:
    """The client ports of the workers' connections to this database."""
    rows = conn.execute(
        "SELECT client_port FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND application_name <> %s",
        (OURS,),
    ).fetchall()
    return [port for (port,) in rows]


async def settled(db: Database, at_least: int) -> list[int]:
    """The workers' connections once there are `at_least`, or after 5 s: Go opens a store's second
    connection when it first needs two at once (mostly a moment after the login)."""
    with trio.move_on_after(5):
        while len(ports := await db.call(backends)) < at_least:
            await trio.sleep(0.1)
    return ports


def per_worker(pool: WorkerPool, ports: list[int]) -> dict[int, int]:
    counts = {}
    for slot in pool._slots:
        assert slot.current is not None
        mine = local_tcp_ports(slot.current.process.pid)
        counts[slot.index] = sum(port in mine for port in ports)
    return counts


async def test_connections_per_session_per_attempt_and_after_a_recycle(
    sim: Simulator,  # noqa: F811
    patched_dir: Path,
    database_url: str,
    tmp_path: Path,
) -> None:
    sessions = [f"s{i}" for i in range(SESSIONS)]
    async with registry(f"{database_url}?application_name={OURS}", *sessions) as db:
        devices = PostgresDevices(db, database_url)
        async with pool_on(patched_dir, devices=devices) as pool, trio.open_nursery() as nursery:
            running = {}
            for i, session in enumerate(sessions):
                running[session] = await start(nursery, pool, session, tmp_path)
                await pair(sim, running[session], phone(i))
            paired = await settled(db, 2 * SESSIONS)
            fds = {stats.index: stats.open_fds for stats in pool.stats()}
            by_worker = per_worker(pool, paired)
            print(f"\n{SESSIONS} sessions paired: {len(paired)} worker connections")
            # Up to two per Neonize() (Go's idle pool); the second opens when first needed.
            assert SESSIONS <= len(paired) <= 2 * SESSIONS + 2

            # Every session reconnects (a new attempt: a new Neonize(), a new store in Go).
            for i, session in enumerate(sessions):
                await stop(running[session])
                running[session] = await start(nursery, pool, session, tmp_path)
                assert await running[session].wait(Connected) == Connected(phone(i))
            reconnected = await settled(db, len(paired) + 2 * SESSIONS)
            print(f"after one more attempt each: {len(reconnected)}")
            # The stopped attempts' stores stay open in Go, with their connections.
            assert len(reconnected) >= len(paired) + SESSIONS

            # Recycle worker 0 (what the pool does past max_leaked_fds): its connections close.
            counts = per_worker(pool, reconnected)
            # Each kept connection is an open file of its worker: what max_leaked_fds recycles on.
            for stats in pool.stats():
                grown = stats.open_fds - fds[stats.index]
                kept = counts[stats.index] - by_worker[stats.index]
                print(f"worker {stats.index}: +{grown} open files, +{kept} connections")
                assert grown >= kept
            assert sum(counts.values()) == len(reconnected)  # every connection is a worker's
            old = pool._slots[0].current
            assert old is not None
            moved = [s for s in sessions if pool.slot_of(s).index == 0]
            marks = {s: len(running[s].events) for s in moved}
            await pool._stop_worker(old, "test: recycled")
            for session in moved:  # the harness reconnects them on the new worker
                await running[session].wait(Connected, after=marks[session], timeout=60)
            # PostgreSQL ends a backend once its client's socket is closed: soon, every connection
            # is a live worker's again (none the old process's), and worker 1 kept its own.
            with trio.move_on_after(30):
                while sum((seen := per_worker(pool, after := await db.call(backends))).values()) != len(
                    after
                ):
                    await trio.sleep(0.2)
            assert sum(seen.values()) == len(after) and seen[1] == counts[1], (seen, len(after))
            assert len(moved) <= seen[0] < counts[0]  # the new worker: its sessions' attempts only
            print(f"per worker before the recycle: {counts}; after: {seen}")
            nursery.cancel_scope.cancel()


async def test_a_worker_past_its_stale_stores_is_recycled_and_its_connections_close(
    sim: Simulator,  # noqa: F811
    patched_dir: Path,
    database_url: str,
    tmp_path: Path,
) -> None:
    async with registry(f"{database_url}?application_name={OURS}", "s0") as db:
        devices = PostgresDevices(db, database_url, max_stale_stores=2)
        async with pool_on(patched_dir, devices=devices, workers=1) as pool, trio.open_nursery() as nursery:
            device = await start(nursery, pool, "s0", tmp_path)
            await pair(sim, device, phone(0))
            for _ in range(3):  # three more attempts: three stale stores > 2
                await stop(device)
                device = await start(nursery, pool, "s0", tmp_path)
                await device.wait(Connected)
            with trio.fail_after(30):  # the next ping sees it
                while not pool.restart_causes:
                    await trio.sleep(0.1)
            assert pool.restart_causes == {"recycled_stores": 1}
            with trio.move_on_after(60):  # reconnected on the new worker; the old one's stores gone
                while not device.connected or len(await db.call(backends)) > 2:
                    await trio.sleep(0.2)
            assert device.connected
            assert 1 <= len(await db.call(backends)) <= 2  # the new worker's one attempt
            nursery.cancel_scope.cancel()
