"""Isolation between engine workers (issue 7, benchmarks (a) and (b)), simulator in its own process.

(a) N sessions spread over the workers, each sending one message a second; SIGKILL one worker.
    Sessions on the other workers: 0 disconnects. The killed worker's sessions: all connected again
    (how long), none asked for a QR. Every send the API accepted (2xx) reached the simulator.
(b) Sessions sending continuously; one session's sends then wait for an ack that never comes
    (the simulator withholds it). The other sessions' send p99, with and without that stall.

    python bench/isolation.py [--sessions 200] [--stall-sessions 20] [--duration 10]

Targets: (a) 0 disconnects elsewhere, reconnected <= 10 s, 0 QR, 0 lost; (b) p99 ratio <= 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    ServiceSystem,
    SimulatorProcess,
    add_common_arguments,
    log,
    pair_all,
    percentile,
    phone_for,
    process_tree,
    run_benchmark,
    simulator,
)
from send import HttpConnection


async def sender(
    service: ServiceSystem,
    sid: str,
    contact: str,
    until: float,
    pause: float,
    latencies: list[float],
    accepted: list[tuple[str, str, str]],
    statuses: Counter[int] | None = None,
) -> None:
    host, port = "127.0.0.1", int(service.url.rsplit(":", 1)[1])
    conn = HttpConnection(host, port)
    n = 0
    try:
        while time.monotonic() < until:
            n += 1
            text = f"{sid} #{n}"
            started = time.monotonic()
            try:
                status, body = await conn.post_json(
                    "/send", {"session_id": sid, "number": contact, "message": text}
                )
            except (OSError, ConnectionError, trio.BrokenResourceError):
                status, body = 0, None
            if statuses is not None:
                statuses[status] += 1
            if status == 200:
                latencies.append(time.monotonic() - started)
                accepted.append((body["result"]["id"], contact, text))
            await trio.sleep(pause)
    finally:
        await conn.aclose()


def is_worker(pid: int) -> bool:
    try:
        return b"waservice.engine.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def lost_messages(sim: SimulatorProcess, accepted: list[tuple[str, str, str]]) -> int:
    received = {(m["id"], m["to"], m["text"]) for m in await sim.get("/messages")}
    return sum(1 for a in accepted if a not in received)


async def closes_by_phone(sim: SimulatorProcess, since: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in await sim.get("/events", kind="closed"):
        if event["t"] >= since and event.get("phone"):
            counts[event["phone"]] = counts.get(event["phone"], 0) + 1
    return counts


async def kill_case(service: ServiceSystem, sim: SimulatorProcess, ids: list[str], args: Any) -> None:
    phones = {sid: phone_for("1555700", i) for i, sid in enumerate(ids)}
    contacts = {sid: f"1202555{i:04d}" for i, sid in enumerate(ids)}  # valid numbers: /send checks them
    latencies: list[float] = []
    accepted: list[tuple[str, str, str]] = []
    statuses: Counter[int] = Counter()
    workers = [pid for pid in process_tree(service.pid)[1:] if is_worker(pid)]
    victim = workers[0]
    registrations = len(await sim.get("/events", kind="registration"))
    async with trio.open_nursery() as nursery:
        until = time.monotonic() + args.duration + 15
        for sid in ids:
            nursery.start_soon(sender, service, sid, contacts[sid], until, 1.0, latencies, accepted, statuses)
        await trio.sleep(args.duration / 2)
        killed_at = time.time()
        os.kill(victim, signal.SIGKILL)
        log(f"killed worker pid {victim} (of {len(workers)})")
        await trio.sleep(0.5)
        down = [sid for sid in ids if service.board.states.get(sid) != "connected"]
        with trio.fail_after(60):
            while True:
                closes = await closes_by_phone(sim, killed_at)
                if closes and all(service.board.states.get(sid) == "connected" for sid in ids):
                    break
                await trio.sleep(0.1)
        reconnected_in = time.time() - killed_at
    dropped = {sid for sid in ids if phones[sid] in closes}
    again = len(await sim.get("/events", kind="registration")) - registrations
    lost = await lost_messages(sim, accepted)
    print(
        f"(a) {len(ids)} sessions on {len(workers)} workers; SIGKILL of one: "
        f"{len(dropped)} sessions dropped (that worker's), {len(ids) - len(dropped)} others with "
        f"{sum(closes.get(phones[s], 0) for s in ids if s not in dropped)} disconnects; "
        f"all connected again {reconnected_in:.1f} s after the kill; {again} new QR pairings; "
        f"{len(accepted)} sends accepted, {lost} lost ({len(down)} seen down 0.5 s after the kill); "
        f"HTTP statuses {dict(statuses)}"
    )


async def stall_case(service: ServiceSystem, sim: SimulatorProcess, ids: list[str], args: Any) -> None:
    contacts = {sid: f"1202556{i:04d}" for i, sid in enumerate(ids)}
    stalled, others = ids[0], ids[1:]

    async def window(stall: bool) -> list[float]:
        latencies: list[float] = []
        accepted: list[tuple[str, str, str]] = []
        await sim.post("/stall-acks", phones=[phone_for("1555700", 0)] if stall else [])
        async with trio.open_nursery() as nursery:
            until = time.monotonic() + args.duration
            if stall:  # its sends now wait (up to 75 s) for an ack that never comes
                nursery.start_soon(sender, service, stalled, contacts[stalled], until, 0.0, [], [])
            for sid in others:
                nursery.start_soon(sender, service, sid, contacts[sid], until, 0.05, latencies, accepted)
            await trio.sleep(args.duration)
            if stall:
                nursery.cancel_scope.cancel()
        await sim.post("/stall-acks", phones=[])
        return latencies

    base = await window(stall=False)
    with_stall = await window(stall=True)
    p99, p99_stall = percentile(base, 99) * 1000, percentile(with_stall, 99) * 1000
    print(
        f"(b) {len(others)} sessions sending while one session's send waits for its ack: "
        f"p99 {p99:.1f} ms without, {p99_stall:.1f} ms with the stall (ratio {p99_stall / p99:.2f}); "
        f"{len(base)} and {len(with_stall)} sends"
    )


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="wa-isolation-"))
    try:
        async with simulator(args.sim_port, workdir) as sim, trio.open_nursery() as nursery:
            service = ServiceSystem(workdir / "data", args.patched_dir)
            await service.start(nursery)
            try:
                ids = [f"iso{i}" for i in range(args.sessions)]
                phones = [phone_for("1555700", i) for i in range(args.sessions)]
                seconds = await pair_all(service, sim, ids, phones, args.concurrency, args.timeout)
                log(f"paired {len(ids)} sessions in {seconds:.1f} s")
                await stall_case(service, sim, ids[: args.stall_sessions], args)
                await kill_case(service, sim, ids, args)
            finally:
                await service.stop()
                nursery.cancel_scope.cancel()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--stall-sessions", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured window")
    add_common_arguments(parser, timeout=600)
    run_benchmark(main, parser.parse_args())
