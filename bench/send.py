"""Send throughput: POST /send on waservice (real neonize engine) against raw neonize send_message,
and against waservice at another revision (``--baseline``, e.g. the commit before a change).

Every /send goes through its session's send queue (pacing off, the default). The WhatsApp
simulator (tests/wasim) runs in its own process. For each system, pair the largest session count
first, then for 1, 10 and 100 connected sessions: every session sends to its own simulated contact
from ``--loops`` concurrent sender loops (a minimal keep-alive HTTP/1.1 client per loop for the
service, threads calling ``send_message`` for raw neonize, one process), a warm-up and then a fixed
measured window. Every 2xx (or returned id) must show up at the simulator, decrypted to the text
sent.

    python bench/send.py [--sessions 1,10,100] [--duration 15] [--warmup 3] [--loops 1] [--skip-raw]
                         [--baseline REV]

Targets: aggregate send >= 300 messages/s for the service; with ``--baseline``, no more than 5 %
below the baseline's rate (the send queue must cost nothing with pacing off). The baseline runs
from a temporary ``git worktree`` of REV against its own simulator, both systems paired at once and
measured in adjacent windows, alternating which goes first; the verdict is the median of the
rounds' ratios (``--rounds``), since this machine's load drifts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    ROOT,
    RawSystem,
    ServiceSystem,
    SimulatorProcess,
    add_common_arguments,
    cpu_percent,
    fmt,
    lease_patched_neonize,
    log,
    pair_all,
    percentile,
    phone_for,
    ratio,
    run_benchmark,
    sample,
    simulator,
)

TARGET_RATE = 300.0
BASELINE_RATIO = 0.95  # the service may be at most 5 % below the baseline


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


async def verify(sim: SimulatorProcess, accepted: list[tuple[str, str, str]]) -> int:
    """How many accepted messages the simulator never received (id, recipient and text must match)."""
    received = {(m["id"], m["to"], m["text"]) for m in await sim.get("/messages")}
    return sum(1 for a in accepted if a not in received)


class HttpConnection:
    """A minimal keep-alive HTTP/1.1 client for POST /send: httpx costs ~1 ms of CPU per request,
    which made the load generator (sharing the machine's 2 cores) the bottleneck at 100 senders."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self.buffer = b""

    async def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.buffer = b""
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        try:
            await self.stream.send_all(head + payload)
            while b"\r\n\r\n" not in self.buffer:
                await self._receive()
            header, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            lines = header.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            length = int(fields.get("content-length", "0"))
            while len(self.buffer) < length:
                await self._receive()
            data, self.buffer = self.buffer[:length], self.buffer[length:]
            if fields.get("connection", "").lower() == "close":
                await self.aclose()
        except BaseException:
            await self.aclose()
            raise
        return status, json.loads(data) if data else None

    async def _receive(self) -> None:
        assert self.stream is not None
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    async def aclose(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def service_case(
    service: ServiceSystem, sim: SimulatorProcess, ids: list[str], contacts: dict[str, str], args: Any
) -> dict[str, Any]:
    latencies: list[float] = []
    accepted: list[tuple[str, str, str]] = []
    statuses: Counter[str] = Counter()
    measured = 0
    url = urlsplit(service.url)
    assert url.hostname is not None and url.port is not None
    start = trio.current_time()
    measure_from, end = start + args.warmup, start + args.warmup + args.duration

    async def loop(sid: str, number: int) -> None:
        nonlocal measured
        to, n = contacts[sid], 0
        http = HttpConnection(url.hostname, url.port)  # type: ignore[arg-type]
        try:
            while (t0 := trio.current_time()) < end:
                text = f"svc {sid} {number} {n}"
                n += 1
                try:
                    status, body = await http.post_json(
                        "/send", {"session_id": sid, "number": to, "message": text}
                    )
                except (OSError, ConnectionError, ValueError) as exc:
                    statuses[type(exc).__name__] += 1
                    await trio.sleep(0.01)
                    continue
                t1 = trio.current_time()
                statuses[str(status)] += 1
                if status // 100 == 2:
                    accepted.append((body["result"]["id"], to, text))
                    if t0 >= measure_from and t1 <= end:
                        latencies.append(t1 - t0)
                        measured += 1
        finally:
            await http.aclose()

    cpu: dict[str, Any] = {}

    async def window() -> None:
        await trio.sleep_until(measure_from)
        before = (sample(service.pid), sample(sim.pid), own_cpu(), time.monotonic())
        await trio.sleep_until(end)
        after = (sample(service.pid), sample(sim.pid), own_cpu(), time.monotonic())
        cpu.update(
            cpu_sut=cpu_percent(before[0], after[0]),
            cpu_sim=cpu_percent(before[1], after[1]),
            cpu_load=100 * (after[2] - before[2]) / (after[3] - before[3]),
            threads=after[0].threads,
            rss=after[0].rss_mb,
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(window)
        for sid in ids:
            for number in range(args.loops):
                nursery.start_soon(loop, sid, number)
    missing = await verify(sim, accepted)
    return {
        "rate": measured / args.duration,
        "p50": 1000 * percentile(latencies, 50),
        "p99": 1000 * percentile(latencies, 99),
        "accepted": len(accepted),
        "missing": missing,
        "errors": {k: v for k, v in statuses.items() if not k.startswith("2")},
        **cpu,
    }


async def raw_case(
    raw: RawSystem, sim: SimulatorProcess, ids: list[str], contacts: dict[str, str], args: Any
) -> dict[str, Any]:
    await raw.command(
        cmd="send_bench",
        ids=ids,
        contacts=contacts,
        loops=args.loops,
        warmup=args.warmup,
        duration=args.duration,
    )
    started = time.monotonic()
    await trio.sleep(args.warmup)
    before = (sample(raw.pid), sample(sim.pid))
    await trio.sleep(max(0.0, started + args.warmup + args.duration - time.monotonic()))
    after = (sample(raw.pid), sample(sim.pid))
    reply = await raw.reply("send_bench", timeout=args.warmup + args.duration + 120)
    accepted = [tuple(x) for x in reply["sent"] + reply["warmup_sent"]]
    missing = await verify(sim, accepted)  # type: ignore[arg-type]
    latencies = reply["latencies"]
    errors = Counter(e[:80] for e in reply["errors"])
    return {
        "rate": len(reply["sent"]) / args.duration,
        "p50": 1000 * percentile(latencies, 50),
        "p99": 1000 * percentile(latencies, 99),
        "accepted": len(accepted),
        "missing": missing,
        "errors": dict(errors),
        "cpu_sut": cpu_percent(before[0], after[0]),
        "cpu_sim": cpu_percent(before[1], after[1]),
        "cpu_load": None,
        "threads": after[0].threads,
        "rss": after[0].rss_mb,
    }


@attrs.frozen
class Paired:
    kind: str
    system: ServiceSystem | RawSystem
    sim: SimulatorProcess
    ids: list[str]
    contacts: dict[str, str]

    async def measure(self, args: Any, count: int) -> dict[str, Any]:
        case = raw_case if self.kind == "raw" else service_case
        result = await case(self.system, self.sim, self.ids[:count], self.contacts, args)  # type: ignore[arg-type]
        log(
            f"{self.kind} {count:>3} sessions: {result['rate']:.0f} msg/s, p50 {result['p50']:.1f} ms, "
            f"p99 {result['p99']:.1f} ms, {result['accepted']} accepted, {result['missing']} missing, "
            f"errors {result['errors']}, CPU {self.kind} {result['cpu_sut']:.0f} % "
            f"sim {result['cpu_sim']:.0f} %"
            + (f" load {result['cpu_load']:.0f} %" if result["cpu_load"] is not None else "")
        )
        self.system.check_alive()
        return result


@asynccontextmanager
async def paired(
    kind: str, args: Any, workdir: Path, patched: Path, sim_port: int, source: Path | None = None
) -> AsyncIterator[Paired]:
    """kind: "service", "raw" or "baseline" (the service from the checkout `source`), with its own
    simulator on `sim_port` (the port the `patched` neonize copy dials), every session paired."""
    most = max(args.sessions)
    ids = [f"s{i:05d}" for i in range(most)]
    phones = [phone_for("1777" if kind == "raw" else "1555", i) for i in range(most)]
    contacts = {sid: f"1202555{i:04d}" for i, sid in enumerate(ids)}  # valid numbers: /send checks them
    data_dir = workdir / kind / "data"
    data_dir.parent.mkdir(parents=True)
    async with simulator(sim_port, workdir) as sim, trio.open_nursery() as nursery:
        # Made once the simulator listens: a service port picked earlier could become its control port.
        system: ServiceSystem | RawSystem
        if kind == "raw":
            system = RawSystem(data_dir, patched)
        else:
            system = ServiceSystem(data_dir, patched, source=source or ROOT)
        try:
            await system.start(nursery)
            log(f"{kind}: pid {system.pid}, simulator pid {sim.pid}; pairing {most} sessions")
            seconds = await pair_all(system, sim, ids, phones, args.concurrency, args.timeout)
            log(f"{kind}: {most} connected in {seconds:.1f} s")
            system.pause_polling()  # the poller would compete with the senders
            await trio.sleep(3)
            yield Paired(kind, system, sim, ids, contacts)
        except BaseException:
            log(f"{kind} log tail:\n{system.log_tail()}\nsimulator log tail:\n{sim.log_tail()}")
            raise
        finally:
            with trio.CancelScope(shield=True):
                await system.stop()
            nursery.cancel_scope.cancel()


async def run_system(kind: str, args: Any, workdir: Path) -> dict[int, dict[str, Any]]:
    async with paired(kind, args, workdir, args.patched_dir, args.sim_port) as system:
        return {count: await system.measure(args, count) for count in args.sessions}


async def run_against_baseline(args: Any, workdir: Path) -> dict[int, list[tuple[dict, dict]]]:
    """The service and the baseline, both paired (each with its own simulator), measured in
    alternating windows (ABBA...), so that the machine's changing load falls on both alike.
    Returns, per session count, one (service, baseline) pair of adjacent windows per round."""
    rounds: dict[int, list[tuple[dict, dict]]] = {}
    source = checkout(args.baseline, workdir / "baseline-src")
    try:
        with lease_patched_neonize() as other:  # a second simulator needs its own port
            async with (
                paired("service", args, workdir, args.patched_dir, args.sim_port) as service,
                paired("baseline", args, workdir, other.path, other.port, source) as baseline,
            ):
                for count in args.sessions:
                    for n in range(args.rounds):
                        if n % 2 == 0:
                            pair = (await service.measure(args, count), await baseline.measure(args, count))
                        else:
                            b = await baseline.measure(args, count)
                            pair = (await service.measure(args, count), b)
                        rounds.setdefault(count, []).append(pair)
    finally:
        remove_checkout(source)
    return rounds


def print_table(args: Any, service: dict[int, dict[str, Any]], raw: dict[int, dict[str, Any]]) -> None:
    side = f"{'msg/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'miss':>5}"
    print(
        f"\nPOST /send vs send_message, {args.loops} sender loop(s) per session, {args.duration:g} s windows"
    )
    print(
        f"{'sessions':>8} | service {side} | raw {side} | {'msg/s ratio':>11} {'p99 ratio':>9} "
        f"| CPU % svc/sim/load  raw/sim"
    )
    for count in args.sessions:
        s, r = service.get(count, {}), raw.get(count, {})

        def cells(x: dict[str, Any]) -> str:
            return (
                f"{fmt(x.get('rate'), 0):>7} {fmt(x.get('p50'), 1):>7} {fmt(x.get('p99'), 1):>7} "
                f"{x.get('missing', '-')!s:>5}"
            )

        cpu_s = "/".join(fmt(s.get(k), 0) for k in ("cpu_sut", "cpu_sim", "cpu_load"))
        cpu_r = "/".join(fmt(r.get(k), 0) for k in ("cpu_sut", "cpu_sim"))
        print(
            f"{count:>8} |         {cells(s)} |     {cells(r)} | {ratio(s.get('rate'), r.get('rate')):>11} "
            f"{ratio(s.get('p99'), r.get('p99')):>9} | {cpu_s:>18}  {cpu_r:>7}"
        )
    problems = [
        f"{kind} {count}: {x['missing']} accepted but never received, errors {x['errors']}"
        for kind, results in (("service", service), ("raw", raw))
        for count, x in results.items()
        if x["missing"] or x["errors"]
    ]
    print("\n".join(problems) if problems else "every accepted message reached the simulator; no errors")
    if service:
        best = max(x["rate"] for x in service.values())
        print(
            f"service target >= {TARGET_RATE:g} msg/s: "
            f"{'met' if best >= TARGET_RATE else 'MISSED'} (best {best:.0f})"
        )


def print_baseline(args: Any, rounds: dict[int, list[tuple[dict, dict]]]) -> None:
    print(
        f"\nPOST /send through the send queue (pacing off) vs waservice at {args.baseline}: "
        f"{args.rounds} rounds of adjacent {args.duration:g} s windows, alternating which goes first"
    )
    print(f"{'sessions':>8} | {'queue msg/s':>11} | {'baseline msg/s':>14} | ratio (median) | per round")
    for count, pairs in rounds.items():
        ratios = [s["rate"] / b["rate"] for s, b in pairs if b["rate"]]
        per_round = ", ".join(f"{s['rate']:.0f}/{b['rate']:.0f}" for s, b in pairs)
        middle = statistics.median(ratios) if ratios else float("nan")
        print(
            f"{count:>8} | {statistics.median(s['rate'] for s, _ in pairs):>11.0f} | "
            f"{statistics.median(b['rate'] for _, b in pairs):>14.0f} | {middle:>14.3f} | {per_round}"
        )
        verdict = "met" if middle >= BASELINE_RATIO else "MISSED"
        print(f"{count} sessions: {middle:.1%} of the baseline (target >= {BASELINE_RATIO:.0%}): {verdict}")


def checkout(revision: str, where: Path) -> Path:
    """A detached worktree of `revision` (removed by `remove_checkout`)."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), revision],
        check=True,
        capture_output=True,
    )
    return where


def remove_checkout(where: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], capture_output=True)


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-send-"))
    service: dict[int, dict[str, Any]] = {}
    raw: dict[int, dict[str, Any]] = {}
    rounds: dict[int, list[tuple[dict, dict]]] = {}
    try:
        if args.baseline:
            rounds = await run_against_baseline(args, workdir)
            service = {  # for the main table: the service's median window
                count: sorted((s for s, _ in pairs), key=lambda r: r["rate"])[len(pairs) // 2]
                for count, pairs in rounds.items()
            }
        elif not args.skip_service:
            service = await run_system("service", args, workdir)
        if not args.skip_raw:
            raw = await run_system("raw", args, workdir)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(args, service, raw)
    if rounds:
        print_baseline(args, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 100])
    parser.add_argument("--duration", type=float, default=15, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds before each window")
    parser.add_argument("--loops", type=int, default=1, help="concurrent sender loops per session")
    parser.add_argument(
        "--baseline", default=None, metavar="REV", help="also run waservice at this git revision, to compare"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="with --baseline: pairs of adjacent windows (the median ratio counts)",
    )
    add_common_arguments(parser, timeout=600)
    run_benchmark(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
