"""Many sessions: waservice (real neonize engine) against raw neonize clients in one process.

The WhatsApp simulator (tests/wasim) runs in its own process; both systems dial it through a patched
neonize copy. For each system: pair N sessions (connect, QR, scan as a distinct phone, wait until all
are connected), let them idle and measure RSS, CPU and OS threads of that one process from /proc,
then stop it and time how long a new process on the same data takes to have all N connected again.

    python bench/sessions.py [N] [--idle-seconds 60] [--skip-raw] [--skip-restore]

Targets for the service at N=1000 (issue 7): <= 1.0 MB RSS per session counting the engine workers'
fixed cost (all processes' RSS / N), <= 0.005 % of a core per idle connected session, restore <= 5 s,
stop (SIGTERM with N connected) <= shutdown_grace + 5 s = 15 s. The service's figures are the API
process plus its engine worker processes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    RawSystem,
    ServiceSystem,
    System,
    add_common_arguments,
    cpu_percent,
    disk_mb,
    fmt,
    log,
    pair_all,
    phone_for,
    ratio,
    run_benchmark,
    sample,
    simulator,
    wait_all_connected,
)

TARGET_N = 1000
TARGETS = {"rss_all_per_session": 1.0, "cpu_per_session": 0.005, "restore": 5.0, "stop": 15.0}


async def measure_idle(system: System, n: int, settle: float, seconds: float) -> dict[str, Any]:
    log(f"{system.name}: settling {settle:.0f} s, then measuring idle for {seconds:.0f} s")
    system.pause_polling()
    await trio.sleep(settle)
    before = sample(system.pid)
    await trio.sleep(seconds)
    after = sample(system.pid)
    system.resume_polling()
    await trio.sleep(1)
    connected = system.board.count("connected", system.board.states)
    if connected < n:
        log(f"{system.name}: WARNING only {connected}/{n} still connected after idling")
    cpu = cpu_percent(before, after)
    return {"rss": after.rss_mb, "threads": after.threads, "cpu": cpu, "cpu_per_session": cpu / n}


async def run_system(
    kind: str, args: argparse.Namespace, workdir: Path, patched: Path, sim_port: int
) -> dict[str, Any]:
    """Pair, idle, restore for one system; returns its numbers."""
    n = args.n
    prefix = "1555" if kind == "service" else "1777"  # own phones per system (each is a fresh sim anyway)
    ids = [f"s{i:05d}" for i in range(n)]
    phones = [phone_for(prefix, i) for i in range(n)]
    data_dir = workdir / kind / "data"
    data_dir.parent.mkdir(parents=True)
    result: dict[str, Any] = {}
    system: ServiceSystem | RawSystem
    system = (
        ServiceSystem(data_dir, patched, args.poll) if kind == "service" else RawSystem(data_dir, patched)
    )
    async with simulator(sim_port, workdir) as sim, trio.open_nursery() as nursery:
        try:
            await system.start(nursery)
            await trio.sleep(2)
            base = sample(system.pid)
            result["rss_base"] = base.rss_mb
            result["threads_base"] = base.threads
            log(f"{kind}: pid {system.pid}, baseline RSS {base.rss_mb:.1f} MB, {base.threads} threads")

            log(f"{kind}: pairing {n} sessions ({args.concurrency} at a time)")
            cpu0 = sample(system.pid)
            result["pair"] = await pair_all(system, sim, ids, phones, args.concurrency, args.timeout)
            result["pair_cpu"] = sample(system.pid).cpu - cpu0.cpu
            log(f"{kind}: all {n} connected in {result['pair']:.1f} s")

            idle = await measure_idle(system, n, args.settle, args.idle_seconds)
            result.update(idle)
            result["rss_per_session"] = (idle["rss"] - base.rss_mb) / n
            result["rss_all_per_session"] = idle["rss"] / n
            result["disk"] = disk_mb(data_dir)
            result["sim_stats"] = await sim.stats()

            if not args.skip_restore:
                result["stop"] = await system.stop()
                await sim.wait_open_connections(0, 60)
                log(f"{kind}: stopped in {result['stop']:.1f} s; restoring")
                system = (
                    ServiceSystem(data_dir, patched, args.poll)
                    if kind == "service"
                    else RawSystem(data_dir, patched)
                )
                started = time.monotonic()
                await system.start(nursery)
                result["ready"] = time.monotonic() - started
                if isinstance(system, RawSystem):
                    await system.connect_many(ids)
                await wait_all_connected(system, ids, args.timeout)
                result["restore"] = time.monotonic() - started
                registrations = (await sim.stats()).get("logins")
                log(f"{kind}: restored {n} in {result['restore']:.2f} s (logins so far: {registrations})")
                await trio.sleep(args.settle)
                after = sample(system.pid)
                result["rss_restored"] = after.rss_mb
                result["threads_restored"] = after.threads
            errors = getattr(system, "errors", [])
            if errors:
                log(f"{kind}: {len(errors)} client errors, first: {errors[:3]}")
        except BaseException:
            tail = system.log_tail()
            if tail:
                log(f"{kind} log tail:\n{tail}")
            log(f"simulator log tail:\n{sim.log_tail()}")
            raise
        finally:
            with trio.CancelScope(shield=True):
                await system.stop()
            nursery.cancel_scope.cancel()
    return result


def print_table(n: int, service: dict[str, Any] | None, raw: dict[str, Any] | None) -> None:
    rows = [
        ("pair + connect all (s)", "pair", 1, None),
        ("  CPU of the process while pairing (s)", "pair_cpu", 1, None),
        ("RSS baseline, 0 sessions (MB)", "rss_base", 1, None),
        ("RSS with N connected (MB)", "rss", 1, None),
        ("RSS per session, above baseline (MB)", "rss_per_session", 3, None),
        ("RSS per session, all of it / N (MB)", "rss_all_per_session", 3, "rss_all_per_session"),
        ("idle CPU total (% of a core)", "cpu", 2, None),
        ("idle CPU per session (% of a core)", "cpu_per_session", 4, "cpu_per_session"),
        ("OS threads (baseline)", "threads_base", 0, None),
        ("OS threads (N connected)", "threads", 0, None),
        ("data on disk (MB)", "disk", 0, None),
        ("stop (SIGTERM / stop all) (s)", "stop", 2, "stop"),
        ("restore: process up (s)", "ready", 2, None),
        ("restore: all N connected (s)", "restore", 2, "restore"),
        ("RSS after restore (MB)", "rss_restored", 1, None),
        ("OS threads after restore", "threads_restored", 0, None),
    ]
    s, r = service or {}, raw or {}
    print(f"\nN = {n} sessions")
    print(f"{'metric':<40} {'service':>10} {'raw':>10} {'ours/raw':>9} {'target':>8}")
    for label, key, digits, target in rows:
        ours, base = s.get(key), r.get(key)
        goal = f"<= {TARGETS[target]:g}" if target else ""
        print(f"{label:<40} {fmt(ours, digits):>10} {fmt(base, digits):>10} {ratio(ours, base):>9} {goal:>8}")
    verdicts = []
    for key, label in (
        ("rss_all_per_session", "RSS/session"),
        ("cpu_per_session", "CPU/session"),
        ("restore", "restore"),
        ("stop", "stop"),
    ):
        if key in s:
            verdicts.append(f"{label} {'met' if s[key] <= TARGETS[key] else 'MISSED'}")
    if verdicts:
        note = "" if n == TARGET_N else f" (the targets are set for N={TARGET_N})"
        print("service targets: " + ", ".join(verdicts) + note)


async def main_async(args: argparse.Namespace) -> None:
    free = shutil.disk_usage(tempfile.gettempdir()).free / 2**30
    log(f"{free:.0f} GiB free in {tempfile.gettempdir()}")
    patched = args.patched_dir
    workdir = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    service = raw = None
    try:
        if not args.skip_service:
            service = await run_system("service", args, workdir, patched, args.sim_port)
            shutil.rmtree(workdir / "service", ignore_errors=True)
        if not args.skip_raw:
            raw = await run_system("raw", args, workdir, patched, args.sim_port)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(args.n, service, raw)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("n", nargs="?", type=int, default=TARGET_N, help=f"sessions (default {TARGET_N})")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--settle", type=float, default=10, help="seconds to wait before measuring idle")
    parser.add_argument(
        "--poll", type=float, default=0.1, help="seconds between GET /sessions polls of the service"
    )
    parser.add_argument("--skip-restore", action="store_true")
    add_common_arguments(parser, timeout=900)
    run_benchmark(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
