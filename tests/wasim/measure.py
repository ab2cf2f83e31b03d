"""Measure what the simulator's contacts cost and how fast real devices take their messages.

    python -m tests.wasim.measure [--devices 1 10] [--per-device 2000]

1. The simulator's own cost per message (no device): the Signal chain step, and everything the
   simulator does for a message to a live connection (stanza, node encoding, Noise encryption).
2. The ceiling into N real neonize devices (raw driver, one process): a burst at full speed from
   inside the simulator, timed from the first message queued to the last receipt.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import trio

from . import codec, waproto
from .accounts import UploadedKeys
from .keys import KeyPair
from .noise import Transport
from .patch import PatchedNeonize, lease_patched_neonize
from .server import Connection, Simulator, open_simulator
from .signal_rx import SignalDevice
from .signal_tx import PreKeyBundle, SendingSession


def per_message_cost(n: int = 20_000) -> dict[str, float]:
    """Microseconds per message: the chain step alone, and the whole path to ciphertext on the wire."""
    bob = SignalDevice(identity=KeyPair.generate())
    assert bob.signed_prekey is not None
    bundle = PreKeyBundle(1, bob.identity.pub, 1, bob.signed_prekey.keys.pub, None)
    session = SendingSession(KeyPair.generate(), 1, bundle)
    body = waproto.text("a message of ordinary length, forty-odd characters")
    start = time.perf_counter()
    for _ in range(n):
        session.encrypt(body)
    chain = (time.perf_counter() - start) / n * 1e6

    sim = Simulator()
    account = sim.account("15550001111")
    keys = UploadedKeys(1, bob.identity.pub, 1, bob.signed_prekey.keys.pub, b"")
    device = account.add_companion(b"noise", keys)
    device.confirmed = True
    send, receive = trio.open_memory_channel[object](math.inf)
    conn = Connection(1, "x", 0.0, send, receive, phone=account.phone, device_id=device.device_id)  # type: ignore[arg-type]
    conn.state = "active"
    sim.connections[1] = conn
    sim._active_devices[(account.phone, device.device_id)] = conn
    cipher = Transport(bytes(32))
    start = time.perf_counter()
    for _ in range(n):
        sim.queue_message(account.phone, "15559990000", body)
        node = receive.receive_nowait()
        cipher.encrypt(b"\x00" + codec.encode(node))  # what the connection's writer does
    whole = (time.perf_counter() - start) / n * 1e6
    return {"chain_step_us": round(chain, 1), "queue_encode_encrypt_us": round(whole, 1)}


async def device_ceiling(patched: PatchedNeonize, devices: int, per_device: int) -> dict[str, float]:
    from tests.simulator.clients import RawClient

    phones = [f"1555000{i:04d}" for i in range(devices)]
    with tempfile.TemporaryDirectory() as tmp:
        async with open_simulator(patched.port) as sim, trio.open_nursery() as nursery:
            driver = await RawClient.start(nursery, patched.path, Path(tmp), "measure")
            driver._add = _quiet(driver._add)  # type: ignore[method-assign]
            for i, phone in enumerate(phones):
                await driver.connect(f"d{i}")
                qr = await driver.wait("qr", where=lambda e, i=i: e["client"] == f"d{i}")
                sim.scan_qr(qr["qr"], phone)
                await sim.wait_connected(phone, timeout=60)
            # Warm-up: one message each opens every session (the X3DH) before the clock starts.
            for phone in phones:
                await sim.wait_acked(
                    phone, await sim.send_message(phone, "15559990000", waproto.text("warm"))
                )
            start, cpu = time.monotonic(), time.process_time()
            burst = sim.start_burst(phones, per_device, rate=0, senders=["15559990000"])
            total = burst.total + devices
            with trio.fail_after(600):  # polled: a predicate over every delivery on every event is O(n²)
                while sum(d.acked_at is not None for d in sim.delivered()) < total:
                    await trio.sleep(0.05)
            elapsed = time.monotonic() - start
            # This process: the simulator and the reading of the driver's event lines (not the devices).
            cpu = time.process_time() - cpu
            last_sent = max(d.sent_at or 0 for d in sim.delivered())
            driver.kill()
            nursery.cancel_scope.cancel()
    return {
        "devices": devices,
        "messages": burst.total,
        "seconds": round(elapsed, 2),
        "acked_per_s": round(burst.total / elapsed),
        "queued_in_s": round(last_sent - (burst.started_at or 0), 2),
        "sim_cpu_us_per_msg": round(cpu / burst.total * 1e6),
    }


def _quiet(add):  # keep the driver's events except the per-message ones (memory, not speed)
    def add_event(event: dict) -> None:
        if event.get("event") != "message":
            add(event)

    return add_event


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, nargs="*", default=[1, 10])
    parser.add_argument("--per-device", type=int, default=2000)
    args = parser.parse_args()
    print(per_message_cost())
    with lease_patched_neonize() as patched:
        for n in args.devices:
            per = max(args.per_device // n, 200) if n > 1 else args.per_device
            print(trio.run(device_ceiling, patched, n, per))


if __name__ == "__main__":
    main()
