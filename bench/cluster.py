"""Several nodes on one PostgreSQL (issue 10): failover time, forwarding cost, registry overhead.

Three waservice nodes (real engine), the simulator in its own process and a throwaway PostgreSQL:

1. pair N sessions through one node (each is placed on the least-loaded node);
2. the registry at idle: rows and bytes per session, and statements on its tables per minute;
3. /status and /send throughput through a node that does not own the sessions, as a ratio to
   asking their owner directly;
4. kill -9 the node owning the most sessions: seconds from the kill until each of its sessions is
   connected on another node (median, max), with no QR.

    python bench/cluster.py [--sessions 300] [--nodes 3] [--lease-ttl 20]

Targets: every session of a killed node connected elsewhere <= 30 s after the kill (default lease).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    BenchError,
    ServiceSystem,
    SimulatorProcess,
    add_common_arguments,
    log,
    pair_all,
    phone_for,
    run_benchmark,
    simulator,
)
from send import HttpConnection

from tests.cluster.pgserver import postgres_server

REGISTRY_TABLES = ("ws_sessions", "ws_nodes", "ws_session_keys")


def node_system(workdir: Path, node_id: str, database_url: str, args: argparse.Namespace) -> ServiceSystem:
    env = {"WASERVICE_DATABASE_URL": database_url, "WASERVICE_NODE_ID": node_id}
    lease = f"\n[cluster]\nlease_ttl = {args.lease_ttl}\n"
    return ServiceSystem(workdir / f"data-{node_id}", args.patched_dir, env=env, poll=0.2, extra_config=lease)


async def owners(system: ServiceSystem) -> dict[str, str | None]:
    assert system.http is not None
    sessions = (await system.http.get("/sessions")).json()["sessions"]
    return {s["session_id"]: s["node"] for s in sessions}


def registry_overhead(database_url: str, sessions: int, seconds: float) -> str:
    def counters() -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)"
                " + n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables WHERE relname = ANY(%s)",
                (list(REGISTRY_TABLES),),
            ).fetchone()
            return int(row[0] or 0)

    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT count(*) FROM ws_sessions").fetchone()[0]
        size = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relname = ANY(%s)",
            (list(REGISTRY_TABLES),),
        ).fetchone()[0]
    before = counters()
    time.sleep(seconds)
    per_minute = (counters() - before) * 60 / seconds
    return (
        f"registry: {rows} session rows, {size / max(rows, 1):.0f} bytes per session (tables and indexes), "
        f"{per_minute:.0f} table operations per minute at idle "
        f"({per_minute / max(sessions, 1):.2f} per session)"
    )


async def status_rate(url: str, ids: list[str], seconds: float, workers: int = 8) -> float:
    done = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def worker(offset: int) -> None:
            nonlocal done
            n = offset
            while time.monotonic() < until:
                response = await http.get("/status", params={"session_id": ids[n % len(ids)]})
                if response.status_code != 200:
                    raise BenchError(f"GET /status via {url}: {response.status_code} {response.text}")
                done += 1
                n += workers

        until = time.monotonic() + seconds
        async with trio.open_nursery() as nursery:
            for w in range(workers):
                nursery.start_soon(worker, w)
    return done / seconds


async def send_rate(url: str, ids: list[str], seconds: float) -> float:
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    done = 0

    async def sender(sid: str, contact: str) -> None:
        nonlocal done
        conn = HttpConnection(host, port)
        try:
            while time.monotonic() < until:
                status, body = await conn.post_json(
                    "/send", {"session_id": sid, "number": contact, "message": "x"}
                )
                if status != 200:
                    raise BenchError(f"POST /send via {url}: {status} {body}")
                done += 1
        finally:
            await conn.aclose()

    until = time.monotonic() + seconds
    async with trio.open_nursery() as nursery:
        for i, sid in enumerate(ids):
            nursery.start_soon(sender, sid, f"1202557{i:04d}")
    return done / seconds


async def forwarding(nodes: dict[str, ServiceSystem], args: argparse.Namespace) -> str:
    where = await owners(next(iter(nodes.values())))
    owner_id, other_id = list(nodes)[:2]
    ids = sorted(sid for sid, node in where.items() if node == owner_id and sid.startswith("cl"))[:20]
    owner, other = nodes[owner_id].url, nodes[other_id].url
    lines = []
    for what, measure in (("/status", status_rate), ("/send", send_rate)):
        direct = await measure(owner, ids, args.duration)
        forwarded = await measure(other, ids, args.duration)
        lines.append(
            f"{what}: {direct:.0f}/s asking the owner, {forwarded:.0f}/s through another node "
            f"(ratio {forwarded / direct:.2f}; {len(ids)} sessions)"
        )
    return "\n".join(lines)


async def failover(nodes: dict[str, ServiceSystem], ids: list[str], sim: SimulatorProcess, ttl: float) -> str:
    where = await owners(next(iter(nodes.values())))
    counts = {node_id: sum(1 for sid in ids if where.get(sid) == node_id) for node_id in nodes}
    victim = max(counts, key=counts.get)
    moved = [sid for sid in ids if where.get(sid) == victim]
    survivor = next(n for n in nodes if n != victim)
    pairings = len(await sim.get("/events", kind="registration"))
    log(f"sessions per node {counts}; kill -9 {victim} ({len(moved)} sessions)")
    nodes[victim].pause_polling()
    assert nodes[victim].service.proc is not None
    killed_at = time.monotonic()
    nodes[victim].service.proc.kill()
    nodes[victim].service.proc.wait()
    back: dict[str, float] = {}
    http = nodes[survivor].http
    assert http is not None
    with trio.fail_after(120):
        while len(back) < len(moved):
            sessions = {s["session_id"]: s for s in (await http.get("/sessions")).json()["sessions"]}
            now = time.monotonic() - killed_at
            for sid in moved:
                s = sessions.get(sid, {})
                if sid not in back and s.get("state") == "connected" and s.get("node") not in (None, victim):
                    back[sid] = now
            await trio.sleep(0.1)
    times = sorted(back.values())
    new_pairings = len(await sim.get("/events", kind="registration")) - pairings
    return (
        f"failover: {len(moved)} sessions of the killed node connected on the others "
        f"median {statistics.median(times):.1f} s, max {times[-1]:.1f} s after the kill "
        f"(lease_ttl {ttl:.0f} s; {new_pairings} new QR pairings)"
    )


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="wa-cluster-"))
    try:
        with postgres_server(max_connections=max(500, args.sessions * 4 + 100)) as pg:
            with psycopg.connect(pg.url(), autocommit=True) as admin:
                admin.execute("CREATE DATABASE bench")
            database_url = pg.url("bench")
            async with simulator(args.sim_port, workdir) as sim, trio.open_nursery() as nursery:
                nodes = {
                    f"n{i}": node_system(workdir, f"n{i}", database_url, args) for i in range(args.nodes)
                }
                for system in nodes.values():
                    await system.start(nursery)
                try:
                    entry = next(iter(nodes.values()))
                    ids = [f"cl{i}" for i in range(args.sessions)]
                    phones = [phone_for("1555800", i) for i in range(args.sessions)]
                    seconds = await pair_all(entry, sim, ids, phones, args.concurrency, args.timeout)
                    log(f"paired {len(ids)} sessions over {len(nodes)} nodes in {seconds:.1f} s")
                    for system in nodes.values():
                        system.pause_polling()
                    print(await trio.to_thread.run_sync(registry_overhead, database_url, len(ids), args.idle))
                    print(await forwarding(nodes, args))
                    print(await failover(nodes, ids, sim, args.lease_ttl))
                finally:
                    for system in nodes.values():
                        if system.service.proc is not None and system.service.proc.poll() is None:
                            await system.stop()
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
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--lease-ttl", type=float, default=20.0, help="cluster.lease_ttl of every node")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput window")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds the registry is watched at idle")
    add_common_arguments(parser, timeout=900)
    run_benchmark(main, parser.parse_args())
