"""Forwarding overhead: `GET /status` and `POST /send` through a node that does not own the session,
against the same request straight to its owner.

Two nodes (fake engine, real sockets, the forwarding tests' harness) in this process; the client
alternates direct and forwarded requests so both see the same load. Prints the median and p90
latency of each, one request at a time, and the throughput with `--concurrency` callers.

    python bench/forwarding.py [--requests 500] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.unit.nodes import DictLocator, Node, open_node

SESSION = "bench"
PHONE = "573001234567"
KEY = "bench-key"


async def _connected(http: httpx.AsyncClient, owner: Node) -> None:
    owner.locator.owners[SESSION] = owner.owner
    assert (await http.post(f"{owner.url}/connect", json={"session_id": SESSION})).status_code == 200
    with trio.fail_after(10):
        while SESSION not in owner.engine.clients or not owner.engine.clients[SESSION].running:
            await trio.sleep(0.01)
        owner.engine.clients[SESSION].scan(PHONE)
        while (await http.get(f"{owner.url}/status", params={"session_id": SESSION})).json()[
            "state"
        ] != "connected":
            await trio.sleep(0.01)


async def _one(http: httpx.AsyncClient, node: Node, route: str) -> float:
    started = time.perf_counter()
    if route == "status":
        answer = await http.get(f"{node.url}/status", params={"session_id": SESSION})
    else:
        body = {"session_id": SESSION, "number": "14155552671", "message": "bench"}
        answer = await http.post(f"{node.url}/send", json=body)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise RuntimeError(f"{route} via {node.node_id}: {answer.status_code} {answer.text[:200]}")
    return elapsed


async def _latency(
    http: httpx.AsyncClient, owner: Node, other: Node, route: str, n: int
) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"direct": [], "forwarded": []}
    for _ in range(20):  # warm both pools
        await _one(http, owner, route)
        await _one(http, other, route)
    for _ in range(n):
        timings["direct"].append(await _one(http, owner, route))
        timings["forwarded"].append(await _one(http, other, route))
    return timings


async def _throughput(http: httpx.AsyncClient, node: Node, route: str, n: int, concurrency: int) -> float:
    remaining = n

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await _one(http, node, route)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    return n / (time.perf_counter() - started)


def _ms(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100)[int(q) - 1] * 1000
        if q != 50
        else statistics.median(values) * 1000
    )


async def main(requests: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        locator = DictLocator()
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with (
            open_node("owner", Path(tmp) / "owner", locator, api_key=KEY) as owner,
            open_node("other", Path(tmp) / "other", locator, api_key=KEY) as other,
            httpx.AsyncClient(headers={"X-API-Key": KEY}, timeout=30, limits=limits) as http,
        ):
            await _connected(http, owner)
            print(f"{requests} requests each; latency one at a time, throughput with {concurrency} callers")
            print(f"{'route':<8}{'path':<11}{'p50 ms':>8}{'p90 ms':>8}{'req/s':>9}")
            for route in ("status", "send"):
                timings = await _latency(http, owner, other, route, requests)
                rates = {
                    "direct": await _throughput(http, owner, route, requests, concurrency),
                    "forwarded": await _throughput(http, other, route, requests, concurrency),
                }
                for path in ("direct", "forwarded"):
                    values = timings[path]
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
    args = parser.parse_args()
    trio.run(main, args.requests, args.concurrency)
