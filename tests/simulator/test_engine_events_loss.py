"""How many messages WhatsApp believes delivered are lost when a worker is SIGKILLed mid-burst, and
how long a message takes from the worker's callback (and from whatsmeow's receipt) to the sink.

Contacts write to one paired device in bursts; the worker is killed while messages are arriving; the
device comes back (the pool restarts the worker, stored credentials, no QR) and the simulator
redelivers what was never receipted. Lost = receipted to the simulator, never in the sink.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
from pathlib import Path

import pytest
import trio

from tests.simulator.engine_harness import Device
from tests.simulator.test_engine_events import PHONE, Sink, paired
from tests.wasim import Simulator, waproto
from waservice.engine import Connected, ConnectionLost
from waservice.engine.pool import WorkerPool

pytestmark = [pytest.mark.simulator, pytest.mark.slow, pytest.mark.trio]

ROUNDS = 3
BURST = 150  # messages per round, from CONTACTS contacts
CONTACTS = 5
SETTLE = 20.0  # after the device is back: how long a receipted message may still take to arrive


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def burst(sim: Simulator, round_: int, sent: list[str]) -> None:
    """BURST messages, 50 at a time: whatsmeow has a queue of them when the worker is killed."""
    for i in range(BURST):
        contact = f"1555444{round_}{i % CONTACTS:03d}"
        sent.append(sim.queue_message(PHONE, contact, waproto.text(f"r{round_} m{i}")))
        if i % 50 == 49:
            await trio.sleep(0.002)


async def kill_when(pool: WorkerPool, device: Device, sink: Sink, after: int) -> None:
    """SIGKILL the device's worker once `after` more messages reached the sink; wait until it is back."""
    await sink.wait(lambda _: len(sink.of("message.received")) >= after, timeout=60)
    worker = pool.slot_of(device.session_id).current
    assert worker is not None
    mark = len(device.events)
    os.kill(worker.process.pid, signal.SIGKILL)
    lost = await device.wait(ConnectionLost, after=mark)
    await device.wait(Connected, after=device.events.index(lost), timeout=60)


async def test_sigkill_mid_burst_loses_only_what_was_receipted_before_the_sink(
    sim: Simulator, patched_dir: Path, tmp_path: Path
) -> None:
    sent: list[str] = []
    async with paired(sim, patched_dir, tmp_path, workers=1) as (pool, device, sink):
        rng = random.Random(8)
        for round_ in range(ROUNDS):
            before = len(sink.of("message.received"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(burst, sim, round_, sent)
                await kill_when(pool, device, sink, before + rng.randrange(10, BURST // 2))
            await sim.wait_connected(PHONE, timeout=60)

        # Everything is receipted in the end (what the worker never receipted is sent again).
        mine = [d for d in sim.delivered(PHONE) if d.id in set(sent)]
        await sim.wait_for(lambda: all(d.acked_at is not None for d in mine), timeout=60)
        logged = {a.key for a in sink.of("message.received")}
        with trio.move_on_after(SETTLE):  # the good case ends at once, when the last one arrives
            while not {d.id for d in mine} <= logged:
                await sink.wait(lambda a, seen=logged: a.key not in seen)
                logged = {a.key for a in sink.of("message.received")}
        lost = sorted(d.id for d in mine if d.id not in logged)

        arrival = {
            a.key: t for a, t in zip(sink.items, sink.arrived, strict=True) if a.type == "message.received"
        }
        received = {a.key: a.received for a in sink.of("message.received")}
        from_callback = [arrival[k] - received[k] for k in arrival]
        from_receipt = [arrival[d.id] - d.acked_at for d in mine if d.id in arrival and d.acked_at]
        rewritten = sum(d.attempts > 1 for d in mine)
        duplicates = len(sink.of("message.received")) - len(arrival)
        report = (
            f"{ROUNDS} SIGKILLs, {len(mine)} messages: {len(lost)} receipted but never in the sink; "
            f"{rewritten} written to the device more than once; "
            f"{duplicates} duplicate activities (the log drops them by key); "
            f"callback->sink p50 {percentile(from_callback, 50) * 1000:.1f} ms "
            f"p99 {percentile(from_callback, 99) * 1000:.1f} ms; "
            f"receipt->sink p50 {percentile(from_receipt, 50) * 1000:.1f} ms "
            f"p99 {percentile(from_receipt, 99) * 1000:.1f} ms"
        )
        print(report)
        assert len(arrival) + len(lost) == len(mine)
        # What whatsmeow receipts before handing it to us (up to its 100-event queue) dies with it:
        # the loss is bounded by that queue per kill, not by the size of the burst.
        assert len(lost) <= 100 * ROUNDS, report
