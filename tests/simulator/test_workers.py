"""The real engine in worker processes, against the simulator: isolation, recycling, the bridge lock.

These drive the pool directly (no HTTP); tests/simulator/test_engine_faults.py runs the service.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import trio

from tests.simulator.engine_harness import Device, pair, pool_on
from tests.wasim import Simulator
from waservice.config import EngineConfig, EventsConfig
from waservice.engine import Connected, ConnectionLost, OutcomeUnknown, QrCode
from waservice.engine.launch import head_start
from waservice.engine.pool import WorkerPool

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

CONTACT = "15559998888"


def phone(i: int) -> str:
    return f"1555000{i:04d}"


async def start_paired(
    nursery: trio.Nursery, pool: WorkerPool, sim: Simulator, tmp_path: Path, n: int
) -> list[Device]:
    devices = [Device(pool, f"s{i}", tmp_path / f"s{i}") for i in range(n)]
    for i, device in enumerate(devices):
        await nursery.start(device.run)
        await pair(sim, device, phone(i))
    return devices


async def test_pair_and_send_without_neonize_here(sim: Simulator, patched_dir: Path, tmp_path: Path) -> None:
    async with pool_on(patched_dir) as pool, trio.open_nursery() as nursery:
        (device,) = await start_paired(nursery, pool, sim, tmp_path, 1)
        assert device.events[-1] == Connected(phone(0))
        sent = await device.send_text(CONTACT, "hello")
        message = await sim.wait_message(to=CONTACT, text="hello")
        assert message.id == sent.id
        assert "bot" not in message.child_tags  # NEONIZE_BOT_TAG=off reached Go at spawn
        stats = {s.index: s for s in pool.stats()}  # per worker, read from /proc
        mine = stats[pool.slot_of("s0").index]
        assert mine.state == "running" and mine.sessions == 1 and mine.open_fds > 3 and mine.rss_mb > 20
        # Only the workers load neonize (and Go); this process never does.
        assert not [name for name in sys.modules if name.split(".")[0] == "neonize"]
        nursery.cancel_scope.cancel()


async def test_the_pool_adopts_the_workers_launched_ahead(
    sim: Simulator, patched_dir: Path, tmp_path: Path
) -> None:
    env = {"PYTHONPATH": str(patched_dir)}
    async with head_start("neonize", EngineConfig(workers=2), EventsConfig(), env) as early:
        assert early is not None
        launched = early.pids
        assert len(launched) == 2
        async with pool_on(patched_dir, head_start=early) as pool, trio.open_nursery() as nursery:
            (device,) = await start_paired(nursery, pool, sim, tmp_path, 1)  # through an adopted one
            assert early.pids == []  # each slot took one
            worker = pool._slots[pool.slot_of("s0").index].current
            assert worker is not None and worker.process.pid in launched
            await device.send_text(CONTACT, "from a worker launched ahead")
            await sim.wait_message(to=CONTACT, text="from a worker launched ahead")
            nursery.cancel_scope.cancel()


async def test_workers_launched_ahead_and_never_taken_are_killed(patched_dir: Path) -> None:
    """The service could not start (its port taken, say): no worker outlives it."""
    env = {"PYTHONPATH": str(patched_dir)}
    async with head_start("neonize", EngineConfig(workers=2), EventsConfig(), env) as early:
        assert early is not None
        launched = early.pids
        assert len(launched) == 2 and all(Path(f"/proc/{pid}").exists() for pid in launched)
    assert not [pid for pid in launched if Path(f"/proc/{pid}").exists()]  # killed and reaped


async def test_sigkill_drops_only_that_workers_sessions(
    sim: Simulator, patched_dir: Path, tmp_path: Path
) -> None:
    async with pool_on(patched_dir, workers=2) as pool, trio.open_nursery() as nursery:
        devices = await start_paired(nursery, pool, sim, tmp_path, 4)  # least-loaded: 0,1,0,1
        victims = [d for d in devices if pool.slot_of(d.session_id).index == 0]
        others = [d for d in devices if pool.slot_of(d.session_id).index == 1]
        assert len(victims) == len(others) == 2
        marks = {d.session_id: len(d.events) for d in devices}
        registrations = len(sim.events("registration"))
        worker = pool._slots[0].current
        assert worker is not None
        os.kill(worker.process.pid, signal.SIGKILL)

        for device in victims:
            lost = await device.wait(ConnectionLost, after=marks[device.session_id])
            assert "engine worker 0 exited (SIGKILL)" in lost.reason, lost
            await device.wait(Connected, after=device.events.index(lost), timeout=60)
        assert len(sim.events("registration")) == registrations  # stored credentials: no QR
        for device in victims:
            assert device.count(QrCode) == 1
        for device in others:  # the other worker's sessions never noticed
            assert device.events[marks[device.session_id] :] == []
            assert device.connected
        assert pool._slots[1].restarts == 0 and pool._slots[0].restarts == 1
        for i, device in enumerate(devices):
            await device.send_text(CONTACT, f"after the kill {i}")
            await sim.wait_message(to=CONTACT, text=f"after the kill {i}")
        nursery.cancel_scope.cancel()


async def test_stalled_send_delays_no_other_session(
    sim: Simulator, patched_dir: Path, tmp_path: Path
) -> None:
    """One worker; a send waits for an ack that never comes. Every other session of that worker
    still sends, stops and starts at once: the bridge lock is held only for Go's map access."""
    async with pool_on(patched_dir, workers=1) as pool, trio.open_nursery() as nursery:
        stalled, other = await start_paired(nursery, pool, sim, tmp_path, 2)
        # Warm up both (the first send to a contact fetches its devices and keys).
        await stalled.send_text(CONTACT, "warm-up 0")
        await other.send_text(CONTACT, "warm-up 1")
        sim.stall_acks({phone(0)})
        mark = len(sim.history)
        stalled_send = trio.CancelScope()

        async def send_and_wait() -> None:
            with stalled_send:
                await stalled.send_text(CONTACT, "never acknowledged")

        nursery.start_soon(send_and_wait)
        await sim.wait_event("unacked_message", after=mark, phone=phone(0))  # Go now waits for the ack

        with trio.fail_after(15):  # all of this takes well under a second on an idle machine
            for i in range(3):
                await other.send_text(CONTACT, f"meanwhile {i}")
            newcomer = Device(pool, "new", tmp_path / "new")  # a start (Go map writes)...
            await nursery.start(newcomer.run)
            await newcomer.wait(QrCode)
            newcomer.stop()  # ...and a stop of another client
            await newcomer.done.wait()
            other.stop()  # and a reconnect of a paired one
            await other.done.wait()
            again = Device(pool, other.session_id, other.client.directory)
            await nursery.start(again.run)
            await again.wait(Connected)
        assert not stalled_send.cancelled_caught  # the stalled send was still waiting all along
        stalled_send.cancel()
        nursery.cancel_scope.cancel()


async def test_abandoned_qr_clients_are_capped_by_recycling(
    sim: Simulator, patched_dir: Path, tmp_path: Path
) -> None:
    """Sessions deleted while showing a QR code leave Go's QR loop (and its db handle) behind;
    past `max_abandoned_clients` the worker is replaced, which frees them all."""
    async with (
        pool_on(patched_dir, workers=1, max_abandoned_clients=2) as pool,
        trio.open_nursery() as nursery,
    ):
        (paired,) = await start_paired(nursery, pool, sim, tmp_path, 1)
        first = pool._slots[0].current
        assert first is not None
        for i in range(3):
            device = Device(pool, f"qr{i}", tmp_path / f"qr{i}")
            await nursery.start(device.run)
            await device.wait(QrCode)
            device.stop()
            await device.done.wait()
        with trio.fail_after(60):
            await first.exited.wait()
        assert "abandoned" in first.reason and "recycled" in first.reason, first.reason
        # The paired session reconnects on the fresh worker, without a QR.
        lost = await paired.wait(ConnectionLost)
        assert "recycled" in lost.reason
        await paired.wait(Connected, after=paired.events.index(lost), timeout=60)
        fresh = pool._slots[0].current
        assert fresh is not None and fresh.process.pid != first.process.pid
        open_files = [
            os.readlink(f"/proc/{fresh.process.pid}/fd/{fd}")
            for fd in os.listdir(f"/proc/{fresh.process.pid}/fd")
        ]
        assert not [f for f in open_files if "/qr" in f], open_files
        nursery.cancel_scope.cancel()


async def test_send_on_a_dead_worker_says_the_outcome_is_unknown(
    sim: Simulator, patched_dir: Path, tmp_path: Path
) -> None:
    async with pool_on(patched_dir, workers=1) as pool, trio.open_nursery() as nursery:
        (device,) = await start_paired(nursery, pool, sim, tmp_path, 1)
        await device.send_text(CONTACT, "warm-up")
        sim.stall_acks({phone(0)})
        mark = len(sim.history)
        result: list[str] = []

        async def send() -> None:
            try:
                await device.send_text(CONTACT, "in flight")
            except OutcomeUnknown as exc:  # Go had the message: it may have gone out
                result.append(str(exc))

        nursery.start_soon(send)
        await sim.wait_event("unacked_message", after=mark, phone=phone(0))
        worker = pool._slots[0].current
        assert worker is not None
        os.kill(worker.process.pid, signal.SIGKILL)
        with trio.fail_after(30):
            while not result:
                await trio.sleep(0.05)
        assert "engine worker 0 exited (SIGKILL)" in result[0], result
        nursery.cancel_scope.cancel()


async def test_hung_worker_is_killed_and_its_sessions_reconnect(
    sim: Simulator, patched_dir: Path, tmp_path: Path
) -> None:
    async with (
        pool_on(patched_dir, workers=1, ping_interval=0.5, ping_timeout=3.0) as pool,
        trio.open_nursery() as nursery,
    ):
        (device,) = await start_paired(nursery, pool, sim, tmp_path, 1)
        worker = pool._slots[0].current
        assert worker is not None
        mark = len(device.events)
        os.kill(worker.process.pid, signal.SIGSTOP)  # hung: alive, but answers nothing
        lost = await device.wait(ConnectionLost, after=mark)
        assert "did not answer a ping in 3 s; killed" in lost.reason, lost
        await device.wait(Connected, after=device.events.index(lost), timeout=60)
        assert worker.process.returncode == -signal.SIGKILL
        nursery.cancel_scope.cancel()
