"""The HTTP edge under load, this tree against a baseline tree (default: `main`) in the same run.

Both run as real `waservice` processes on the fake engine. For each, `--repeat` times:
1. 300 sessions show QR codes; each code rotates every 20 s (as WhatsApp's do). A client polls
   like the seed's page: `GET /sessions` every 5 s and `GET /qr` of every card every 2.5 s.
   A probe on its own connection samples `GET /health` every 50 ms: p50 / p99 / max, and the
   service's CPU. Target: p99 <= 20 ms. The same probe without the page is the idle baseline;
   `newpage` is this tree's page, which polls only the cards on screen (12 at 1280x900).
2. `/qr` and `/sessions` cost per request: sequential requests on one connection, median latency
   and service CPU time per request (`/qr` cycles through all 300 sessions).
3. 3,000 idle connections (one request each): the service's open fds right after, and once
   `keep_alive_timeout` (5 s by default in both trees) has passed.
4. `/sessions` at `--many` sessions: latency, size, and the worst `/health` stall while 2 clients
   poll it.

Prints medians over the repeats. The fake engine's codes are short (~20 characters); a real code
(~220) takes 5x longer to draw, printed separately for both drawing paths.

    python bench/edge.py [--repeat 3] [--baseline main] [--many 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._harness import KEEPALIVE_EXPIRY, BenchError, log, percentile, sample  # noqa: E402
from tests.process.rawhttp import open_idle, raise_fd_limit, read_response, request  # noqa: E402
from tests.process.service import ServiceProcess  # noqa: E402

QR_SESSIONS = 300
ROTATE_EVERY = 20.0  # seconds between a session's QR codes
PAGE_REFRESH, PAGE_QR_POLL = 5.0, 2.5
PROBE_EVERY = 0.05
IDLE_CONNECTIONS = 3000
VISIBLE_CARDS = 12


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    # `python -m waservice` puts its working directory first on sys.path: start each tree from its own.
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def export_tree(ref: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def start_service(tree: Path, workdir: Path) -> ServiceProcess:
    # create_rate = 0 only where the key exists: the baseline has no limit to turn off.
    config = None
    if "create_rate" in (tree / "waservice" / "config.py").read_text():
        config = workdir / "edge.toml"
        config.write_text("[server]\ncreate_rate = 0\n\n[logging]\nlevel = 'warning'\n")
    env = {"WASERVICE_ENGINE": "fake", "WASERVICE_LOG_LEVEL": "warning"}
    service = ServiceProcess(workdir / "data", env=env, config=config, pythonpath=tree)
    with _cwd(tree):
        return service.start()


class Client:
    def __init__(self, service: ServiceProcess) -> None:
        limits = httpx.Limits(
            max_connections=50, max_keepalive_connections=50, keepalive_expiry=KEEPALIVE_EXPIRY
        )
        self.http = httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits)

    async def ok(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code != 200:
            raise BenchError(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response


async def create_sessions(client: Client, ids: list[str]) -> None:
    limiter = trio.CapacityLimiter(20)

    async def create(sid: str) -> None:
        async with limiter:
            await client.ok("POST", "/connect", json={"session_id": sid})

    async with trio.open_nursery() as nursery:
        for sid in ids:
            nursery.start_soon(create, sid)
    with trio.fail_after(120):
        while True:
            sessions = (await client.ok("GET", "/sessions")).json()["sessions"]
            if sum(s["state"] == "qr_ready" for s in sessions) >= len(ids):
                return
            await trio.sleep(0.5)


async def probe_health(port: int, duration: float) -> list[float]:
    """Latency (ms) of GET /health every PROBE_EVERY s, measured from a process of its own (the
    load generator's event loop would add its own delays)."""
    args = [sys.executable, __file__, "--probe", str(port), str(duration)]
    result = await trio.run_process(args, capture_stdout=True, cwd=ROOT)
    return json.loads(result.stdout)


async def _probe(port: int, duration: float) -> list[float]:
    samples: list[float] = []
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        deadline = trio.current_time() + duration
        while trio.current_time() < deadline:
            started = time.perf_counter()
            await stream.send_all(request())
            await read_response(stream)
            samples.append((time.perf_counter() - started) * 1000)
            await trio.sleep(PROBE_EVERY)
    return samples


async def page_pattern(
    client: Client, ids: list[str], served: list[int], rotating: list[str] | None = None
) -> None:
    """The seed's page: the list every 5 s and every QR card in `ids` every 2.5 s; the codes of
    `rotating` (default: `ids`) change every 20 s."""

    async def refresh() -> None:
        while True:
            await client.ok("GET", "/sessions")
            await trio.sleep(PAGE_REFRESH)

    async def card(sid: str, offset: float) -> None:
        await trio.sleep(offset)
        while True:
            await client.ok("GET", f"/qr?session_id={sid}")
            served[0] += 1
            await trio.sleep(PAGE_QR_POLL)

    async def rotate() -> None:
        for sid in itertools.cycle(rotating or ids):
            await trio.sleep(ROTATE_EVERY / len(rotating or ids))
            await client.ok("POST", "/_fake/rotate-qr", json={"session_id": sid})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(refresh)
        nursery.start_soon(rotate)
        for i, sid in enumerate(ids):
            nursery.start_soon(card, sid, PAGE_QR_POLL * i / len(ids))


async def cost_per_request(service: ServiceProcess, paths: list[str], rounds: int) -> tuple[float, float]:
    """(median latency ms, service CPU ms per request) for sequential GETs on one connection."""
    assert service.proc is not None
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        before = sample(service.proc.pid)
        for _ in range(rounds):
            for path in paths:
                started = time.perf_counter()
                response = await http.get(path)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise BenchError(f"GET {path}: {response.status_code}")
        after = sample(service.proc.pid)
    return statistics.median(latencies), (after.cpu - before.cpu) * 1000 / len(latencies)


def open_fds(service: ServiceProcess) -> int:
    assert service.proc is not None
    return len(os.listdir(f"/proc/{service.proc.pid}/fd"))


async def idle_connections(service: ServiceProcess) -> tuple[int, int, int]:
    """(fds before, with 3,000 idle connections, 7 s later)."""
    before = open_fds(service)
    streams = await open_idle(service.port, IDLE_CONNECTIONS)
    held = open_fds(service)
    await trio.sleep(7)  # keep_alive_timeout (5 s) and some
    after = open_fds(service)
    for stream in streams:
        await stream.aclose()
    return before, held, after


async def sessions_under_polling(service: ServiceProcess, client: Client, total: int) -> dict[str, float]:
    have = len((await client.ok("GET", "/sessions")).json()["sessions"])
    await create_sessions(client, [f"m{i:05d}" for i in range(total - have)])
    median, cpu = await cost_per_request(service, ["/sessions"], 20)
    size = len((await client.ok("GET", "/sessions")).content)

    async def poll() -> None:
        while True:
            await client.ok("GET", "/sessions")

    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(poll)
        health = await probe_health(service.port, 10)
        nursery.cancel_scope.cancel()
    return {
        "sessions_many_ms": median,
        "sessions_many_cpu_ms": cpu,
        "sessions_many_kb": size / 1024,
        "health_polled_p99_ms": percentile(health, 99),
        "health_polled_max_ms": max(health),
    }


async def measure(tree: Path, workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    service = start_service(tree, workdir)
    assert service.proc is not None
    client = Client(service)
    result: dict[str, float] = {}
    try:
        ids = [f"q{i:03d}" for i in range(QR_SESSIONS)]
        await create_sessions(client, ids)
        idle = await probe_health(service.port, args.seconds)
        result["health_idle_p50_ms"] = percentile(idle, 50)
        result["health_idle_p99_ms"] = percentile(idle, 99)
        served = [0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(page_pattern, client, ids, served)
            await trio.sleep(PAGE_QR_POLL)  # every card polled once
            before, served_before = sample(service.proc.pid), served[0]
            loaded = await probe_health(service.port, args.seconds)
            after = sample(service.proc.pid)
            nursery.cancel_scope.cancel()
        result["page_qr_per_s"] = (served[0] - served_before) / (after.at - before.at)
        result["health_page_p50_ms"] = percentile(loaded, 50)
        result["health_page_p99_ms"] = percentile(loaded, 99)
        result["health_page_max_ms"] = max(loaded)
        result["cpu_page_percent"] = 100 * (after.cpu - before.cpu) / (after.at - before.at)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(page_pattern, client, ids[:VISIBLE_CARDS], [0], ids)
            await trio.sleep(PAGE_QR_POLL)
            visible = await probe_health(service.port, args.seconds)
            nursery.cancel_scope.cancel()
        result["health_newpage_p50_ms"] = percentile(visible, 50)
        result["health_newpage_p99_ms"] = percentile(visible, 99)
        qr_ms, qr_cpu = await cost_per_request(service, [f"/qr?session_id={sid}" for sid in ids], 2)
        result["qr_ms"], result["qr_cpu_ms"] = qr_ms, qr_cpu
        sessions_ms, sessions_cpu = await cost_per_request(service, ["/sessions"], 50)
        result["sessions_300_ms"], result["sessions_300_cpu_ms"] = sessions_ms, sessions_cpu
        fds_before, fds_held, fds_after = await idle_connections(service)
        result["fds_before"], result["fds_3000_idle"], result["fds_7s_later"] = (
            fds_before,
            fds_held,
            fds_after,
        )
        result.update(await sessions_under_polling(service, client, args.many))
    finally:
        await client.http.aclose()
        service.stop()
    return result


def drawing_cost() -> dict[str, float]:
    """ms to draw a real-length code with the drawing function of this tree (same on main)."""
    import base64
    import secrets

    from waservice.api.qr import render_data_url

    parts = [base64.b64encode(secrets.token_bytes(n)).decode() for n in (60, 32, 32, 32)]
    code = "2@" + ",".join(parts) + ",1"
    times = []
    for _ in range(10):
        started = time.perf_counter()
        render_data_url(code)
        times.append((time.perf_counter() - started) * 1000)
    return {"draw_real_code_ms": statistics.median(times), "real_code_chars": len(code)}


def report(results: dict[str, list[dict[str, float]]]) -> None:
    names = list(results)
    keys = list(results[names[0]][0])
    print(
        f"\n{'median of ' + str(len(results[names[0]])) + ' runs':<26}" + "".join(f"{n:>16}" for n in names)
    )
    for key in keys:
        cells = [statistics.median(run[key] for run in results[name]) for name in names]
        print(f"{key:<26}" + "".join(f"{c:>16.1f}" for c in cells))


async def main() -> None:
    if sys.argv[1:2] == ["--probe"]:
        print(json.dumps(await _probe(int(sys.argv[2]), float(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", default="main", help="git ref to compare with (default: main)")
    parser.add_argument("--many", type=int, default=2000, help="sessions for the large /sessions case")
    parser.add_argument("--seconds", type=float, default=15, help="length of each /health probe")
    args = parser.parse_args()
    raise_fd_limit(IDLE_CONNECTIONS * 2 + 1000)
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        trees = {args.baseline: export_tree(args.baseline, Path(tmp) / "baseline"), "this tree": ROOT}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for run in range(args.repeat):
            for name, tree in trees.items():  # interleaved, so drift hits both alike
                log(f"run {run + 1}/{args.repeat}: {name}")
                workdir = Path(tmp) / f"{run}-{name.replace(' ', '-')}"
                workdir.mkdir()
                results[name].append(await measure(tree, workdir, args))
    report(results)
    print(f"\ndrawing one real-length QR code: {drawing_cost()}")


if __name__ == "__main__":
    trio.run(main)
