"""Forwarding overhead: `GET /status` and `POST /send` through a node that does not own the session,
against the same request straight to its owner.

Two nodes on the fake engine. By default both run in this process (the forwarding tests' harness,
a dict locator: the cost of the relay alone, with the client and both nodes sharing one core).
With `--cluster` they are two service processes on PostgreSQL (a throwaway server, or
`--database-url`), so each forwarded request also asks the registry who owns the session. The
client alternates direct and forwarded requests so both see the same load; it prints the median
and p90 latency of each, one request at a time, and the throughput with `--concurrency` callers.

    python bench/forwarding.py [--requests 500] [--concurrency 20] [--cluster [--database-url URL]]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.cluster.nodes import Cluster
from tests.cluster.pgserver import PostgresServer, postgres_server
from tests.unit.nodes import DictLocator, open_node

SESSION = "bench"
PHONE = "573001234567"
KEY = "bench-key"

Pair = tuple[str, str]  # (the owner's URL, the other node's URL)


async def _wait_connected(http: httpx.AsyncClient, url: str) -> None:
    with trio.fail_after(30):
        while (await http.get(f"{url}/status", params={"session_id": SESSION})).json().get(
            "state"
        ) != "connected":
            await trio.sleep(0.02)


@contextlib.asynccontextmanager
async def _in_process(http: httpx.AsyncClient, tmp: Path) -> AsyncIterator[Pair]:
    locator = DictLocator()
    async with (
        open_node("owner", tmp / "owner", locator, api_key=KEY) as owner,
        open_node("other", tmp / "other", locator, api_key=KEY) as other,
    ):
        locator.owners[SESSION] = owner.owner
        assert (await http.post(f"{owner.url}/connect", json={"session_id": SESSION})).status_code == 200
        with trio.fail_after(10):
            while SESSION not in owner.engine.clients or not owner.engine.clients[SESSION].running:
                await trio.sleep(0.01)
        owner.engine.clients[SESSION].scan(PHONE)
        await _wait_connected(http, owner.url)
        yield owner.url, other.url


@contextlib.asynccontextmanager
async def _processes(http: httpx.AsyncClient, tmp: Path, database_url: str | None) -> AsyncIterator[Pair]:
    """Two service processes on `database_url`, or on a throwaway PostgreSQL when it is None."""
    with contextlib.ExitStack() as stack:
        if database_url is None:
            database_url = _bench_database(stack.enter_context(postgres_server()))
        cluster = Cluster(tmp, database_url, env={"WASERVICE_LOG_LEVEL": "warning"})
        try:
            for node_id in ("a", "b"):
                await trio.to_thread.run_sync(cluster.start, node_id)
            nodes = {node_id: node.url for node_id, node in cluster.nodes.items()}
            placed = await http.post(f"{nodes['a']}/connect", json={"session_id": SESSION})
            assert placed.status_code == 200, placed.text
            owner = nodes[placed.headers["X-Waservice-Node"]]
            other = next(url for url in nodes.values() if url != owner)
            with trio.fail_after(10):
                while (
                    await http.post(f"{owner}/_fake/scan", json={"session_id": SESSION})
                ).status_code != 200:
                    await trio.sleep(0.02)  # until its fake client runs
            await _wait_connected(http, owner)
            yield owner, other
        finally:
            await trio.to_thread.run_sync(cluster.stop_all)


def _bench_database(server: PostgresServer) -> str:
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE bench")
    return server.url("bench")


async def _one(http: httpx.AsyncClient, url: str, route: str) -> float:
    started = time.perf_counter()
    if route == "status":
        answer = await http.get(f"{url}/status", params={"session_id": SESSION})
    else:
        body = {"session_id": SESSION, "number": "14155552671", "message": "bench"}
        answer = await http.post(f"{url}/send", json=body)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise RuntimeError(f"{route} via {url}: {answer.status_code} {answer.text[:200]}")
    return elapsed


async def _latency(http: httpx.AsyncClient, pair: Pair, route: str, n: int) -> dict[str, list[float]]:
    owner, other = pair
    timings: dict[str, list[float]] = {"direct": [], "forwarded": []}
    for _ in range(20):  # warm both pools
        await _one(http, owner, route)
        await _one(http, other, route)
    for _ in range(n):
        timings["direct"].append(await _one(http, owner, route))
        timings["forwarded"].append(await _one(http, other, route))
    return timings


async def _throughput(http: httpx.AsyncClient, url: str, route: str, n: int, concurrency: int) -> float:
    remaining = n

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await _one(http, url, route)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    return n / (time.perf_counter() - started)


def _ms(values: list[float], percentile: int) -> float:
    return statistics.quantiles(values, n=100)[percentile - 1] * 1000


async def main(requests: int, concurrency: int, cluster: bool, database_url: str | None) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with tempfile.TemporaryDirectory() as tmp:
        async with httpx.AsyncClient(headers={"X-API-Key": KEY}, timeout=30, limits=limits) as http:
            nodes = _processes(http, Path(tmp), database_url) if cluster else _in_process(http, Path(tmp))
            async with nodes as pair:
                where = "two processes on PostgreSQL" if cluster else "two nodes in one process"
                print(f"{where}; {requests} requests each, one at a time, then with {concurrency} callers")
                print(f"{'route':<8}{'path':<11}{'p50 ms':>8}{'p90 ms':>8}{'req/s':>9}")
                for route in ("status", "send"):
                    timings = await _latency(http, pair, route, requests)
                    rates = {
                        path: await _throughput(http, url, route, requests, concurrency)
                        for path, url in zip(("direct", "forwarded"), pair, strict=True)
                    }
                    for path, values in timings.items():
                        p50, p90 = _ms(values, 50), _ms(values, 90)
                        print(f"{route:<8}{path:<11}{p50:>8.2f}{p90:>8.2f}{rates[path]:>9.0f}")
                    extra = (
                        statistics.median(timings["forwarded"]) - statistics.median(timings["direct"])
                    ) * 1000
                    ratio = rates["forwarded"] / rates["direct"]
                    print(f"{route:<8}overhead: +{extra:.2f} ms median, throughput x{ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--cluster", action="store_true", help="two service processes on PostgreSQL")
    parser.add_argument("--database-url", help="with --cluster: this PostgreSQL (default: a throwaway one)")
    args = parser.parse_args()
    trio.run(main, args.requests, args.concurrency, args.cluster, args.database_url)
