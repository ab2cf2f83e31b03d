"""Shared parts of the engine benchmarks (sessions.py, send.py): the simulator in its own process,
waservice or a raw neonize driver as the system under test, pairing many sessions, /proc sampling.

Nothing here imports neonize: only the service and the raw driver (``tests/simulator/raw_client.py``,
the one the simulator tests use) do, in subprocesses with the patched copy first on their ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.process.service import ServiceProcess  # noqa: E402
from tests.simulator.clients import Event, RawClient  # noqa: E402
from tests.wasim.patch import lease_patched_neonize  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Reuse a kept-alive connection only well inside the service's keep_alive_timeout (5 s), as
# browsers do (they also retry a request the server's idle close raced; httpx does not). At httpx's
# default of 5 s a request could go out on a connection the service was closing: "Server
# disconnected without sending a response", seen once while pairing.
KEEPALIVE_EXPIRY = 2.0

SERVICE_CONFIG = '[server]\ncreate_rate = 0\n\n[logging]\nlevel = "warning"\n'


class BenchError(RuntimeError):
    """A benchmark step failed or timed out; the message says which and why."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- /proc --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    cpu: float  # utime + stime, seconds
    rss_mb: float
    threads: int


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants: the service's engine workers are its child processes."""
    pids: list[int] = []
    queue = [pid]
    while queue:
        current = queue.pop()
        if current in pids:  # a child can be listed under more than one of the parent's threads
            continue
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                queue += [int(c) for c in (task / "children").read_text().split()]
    return pids


def sample(pid: int) -> Sample:
    """CPU, RSS and threads of the process and its children (the engine workers) together."""
    parts = []
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            parts.append(_sample_one(member))
    return Sample(
        time.monotonic(),
        sum(p.cpu for p in parts),
        sum(p.rss_mb for p in parts),
        sum(p.threads for p in parts),
    )


def _sample_one(pid: int) -> Sample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    rss_kb = int(status.get("VmRSS", "0 kB").split()[0])  # a zombie (an exited worker) has none
    return Sample(time.monotonic(), cpu, rss_kb / 1024, int(status["Threads"]))


def cpu_percent(before: Sample, after: Sample) -> float:
    """CPU use between two samples, in % of one core."""
    return 100 * (after.cpu - before.cpu) / (after.at - before.at)


def disk_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total / 2**20


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# -- the simulator ------------------------------------------------------------------------------


class SimulatorProcess:
    """``python -m tests.wasim`` in its own process (its CPU is not the system under test's)."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.log_path = workdir / f"wasim-{port}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None
        self.control_url = ""
        self.http: httpx.AsyncClient | None = None
        # What a neonize process must start with to trust the simulator's media host (its own CA).
        self.tls_env: dict[str, str] = {}

    async def start(self, timeout: float = 30) -> SimulatorProcess:
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.wasim", "--port", str(self.port), "--control-port", "0"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log_file,
            )
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        with trio.move_on_after(timeout):
            line = await trio.to_thread.run_sync(stdout.readline, abandon_on_cancel=True)
            if not line:
                raise BenchError(f"the simulator exited at start-up:\n{self.log_tail()}")
            ports = json.loads(line)
            self.control_url = f"http://127.0.0.1:{ports['control_port']}"
            self.tls_env = ports.get("tls_env", {})
            self.http = httpx.AsyncClient(base_url=self.control_url, timeout=120)
            return self
        raise BenchError(f"the simulator did not report its ports within {timeout} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    async def get(self, path: str, **params: Any) -> Any:
        assert self.http is not None
        response = await self.http.get(path, params=params)
        if response.status_code != 200:
            raise BenchError(f"simulator GET {path}: {response.status_code} {response.text}")
        return response.json()

    async def post(self, path: str, **body: Any) -> Any:
        assert self.http is not None
        response = await self.http.post(path, json=body)
        if response.status_code != 200:
            raise BenchError(f"simulator POST {path}: {response.status_code} {response.text}")
        return response.json()

    async def scan(self, qr: str, phone: str) -> None:
        await self.post("/scan", qr=qr, phone=phone)

    async def stats(self) -> dict[str, int]:
        return await self.get("/stats")

    async def wait_open_connections(self, count: int, timeout: float) -> None:
        """Wait until the simulator has at most ``count`` open connections (clients went away)."""
        with trio.move_on_after(timeout):
            while (await self.stats())["open_connections"] > count:
                await trio.sleep(0.2)
            return
        raise BenchError(f"the simulator still has open connections after {timeout} s: {await self.stats()}")

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await trio.to_thread.run_sync(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.asynccontextmanager
async def simulator(port: int, workdir: Path) -> AsyncIterator[SimulatorProcess]:
    sim = SimulatorProcess(port, workdir)
    try:
        yield await sim.start()
    finally:
        with trio.CancelScope(shield=True):
            await sim.stop()


# -- session state, shared by both systems under test -------------------------------------------


class Board:
    """The latest known state of every session; waiters re-check on every update."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.qr: dict[str, str | None] = {}  # the latest QR string (raw driver)
        self.has_qr: dict[str, bool] = {}  # whether the service shows a QR (GET /sessions)
        self._changed = trio.Event()

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with trio.move_on_after(timeout):
            while not predicate():
                await self._changed.wait()
            return
        raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")

    def count(self, state: str, ids: Iterable[str]) -> int:
        return sum(self.states.get(sid) == state for sid in ids)


class System:
    """What the pairing and restore code needs from the system under test."""

    board: Board
    pid: int
    name: str

    def check_alive(self) -> None:
        raise NotImplementedError

    def pause_polling(self) -> None:
        pass

    def resume_polling(self) -> None:
        pass

    async def connect(self, sid: str) -> None:
        raise NotImplementedError

    async def fetch_qr(self, sid: str) -> str:
        raise NotImplementedError


class ServiceSystem(System):
    """The real waservice process (neonize engine, patched to dial the simulator)."""

    name = "service"

    def __init__(
        self,
        data_dir: Path,
        pythonpath: Path,
        poll: float = 0.1,
        api_key: str | None = None,
        source: Path = ROOT,
        env: dict[str, str] | None = None,
        extra_config: str = "",
    ) -> None:
        """`source`: the checkout whose waservice runs (another revision, for a baseline); `env`:
        settings its process starts with (the simulator's CA for media, say); `extra_config`: TOML
        sections added to the benchmarks' configuration."""
        config = data_dir.parent / f"bench-config-{data_dir.name}.toml"
        config.write_text(SERVICE_CONFIG + extra_config)
        self.service = ServiceProcess(
            data_dir, env=env, config=config, pythonpath=pythonpath, api_key=api_key, source=source
        )
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.board = Board()
        self.poll = poll
        self.http: httpx.AsyncClient | None = None
        self._poll_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None

    @property
    def pid(self) -> int:
        assert self.service.proc is not None
        return self.service.proc.pid

    @property
    def url(self) -> str:
        return self.service.url

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the process (returns once /health answers) and a poller of GET /sessions."""
        await trio.to_thread.run_sync(lambda: self.service.start(timeout=60))
        limits = httpx.Limits(
            max_connections=200, max_keepalive_connections=200, keepalive_expiry=KEEPALIVE_EXPIRY
        )
        self.http = httpx.AsyncClient(
            base_url=self.service.url, timeout=120, limits=limits, headers=self.headers
        )
        self.board = Board()
        self._nursery = nursery
        self.resume_polling()

    def pause_polling(self) -> None:
        """Stop polling GET /sessions (so idle measurements see only the service's own work)."""
        self._poll_scope.cancel()

    def resume_polling(self) -> None:
        assert self._nursery is not None
        self._poll_scope = trio.CancelScope()
        self._nursery.start_soon(self._poll_sessions, self._poll_scope)

    async def _poll_sessions(self, scope: trio.CancelScope) -> None:
        assert self.http is not None
        with scope:
            await self._poll_forever()

    async def _poll_forever(self) -> None:
        assert self.http is not None
        while True:
            try:
                response = await self.http.get("/sessions")
                for s in response.json()["sessions"]:
                    self.board.states[s["session_id"]] = s["state"]
                    self.board.has_qr[s["session_id"]] = s["has_qr"]
                self.board.changed()
            except (httpx.HTTPError, ValueError, KeyError):
                self.check_alive()
            await trio.sleep(self.poll)

    def check_alive(self) -> None:
        proc = self.service.proc
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"waservice exited with {proc.returncode}:\n{self.service.log()[-3000:]}")

    async def connect(self, sid: str) -> None:
        assert self.http is not None
        response = await self.http.post("/connect", json={"session_id": sid})
        if response.status_code != 200:
            raise BenchError(f"POST /connect {sid}: {response.status_code} {response.text}")

    async def fetch_qr(self, sid: str) -> str:
        assert self.http is not None
        await self.board.wait(lambda: self.board.has_qr.get(sid, False), 60, f"a QR code for {sid}")
        response = await self.http.get("/qr", params={"session_id": sid})
        if response.status_code != 200:
            raise BenchError(f"GET /qr {sid}: {response.status_code} {response.text}")
        return response.json()["code"]

    async def stop(self) -> float:
        """SIGTERM and wait; returns the seconds it took."""
        self._poll_scope.cancel()
        if self.http is not None:
            await self.http.aclose()
            self.http = None
        started = time.monotonic()
        if self.service.proc is not None:
            code = await trio.to_thread.run_sync(self.service.stop)
            if code != 0:
                log(f"waservice exited with code {code}")
        return time.monotonic() - started

    def log_tail(self) -> str:
        return self.service.log()[-3000:]


class RawSystem(System):
    """Raw neonize: N NewClients in one plain Python process (the tests' driver), no service."""

    name = "raw"

    def __init__(self, data_dir: Path, pythonpath: Path) -> None:
        self.data_dir = data_dir
        self.pythonpath = pythonpath
        self.board = Board()
        self.driver: RawClient | None = None
        self.log_path = data_dir.parent / f"raw-{time.monotonic_ns()}.log"

    @property
    def pid(self) -> int:
        assert self.driver is not None
        return self.driver.pid

    async def start(self, nursery: trio.Nursery, timeout: float = 60) -> None:
        self.board = Board()
        # Go reads the environment once, at load: the bot tag is switched off at spawn, as the service does.
        with self.log_path.open("ab") as log_file:
            try:
                self.driver = await RawClient.start(
                    nursery,
                    self.pythonpath,
                    self.data_dir,
                    env={"NEONIZE_BOT_TAG": "off"},
                    stderr=log_file,
                    on_event=self._on_event,
                    timeout=timeout,
                )
            except (AssertionError, trio.TooSlowError) as exc:
                raise BenchError(f"the raw driver did not start ({exc!r}):\n{self.log_tail()}") from exc

    def _on_event(self, event: Event) -> None:
        kind, sid = event["event"], event.get("client")
        if kind == "qr":
            self.board.qr[sid] = event["qr"]
            self.board.states[sid] = "qr_ready"
        elif kind == "connected":
            self.board.states[sid] = "connected"
        elif kind in ("disconnected", "logged_out", "connect_error"):
            self.board.states[sid] = kind
        else:
            return
        self.board.changed()

    async def reply(self, kind: str, timeout: float) -> Event:
        """The driver's next answer of this kind (``send_bench``, ``done``)."""
        assert self.driver is not None
        try:
            return await self.driver.reply(kind, timeout)
        except AssertionError as exc:  # the driver exited
            raise BenchError(f"{exc}\n{self.log_tail()}") from exc
        except trio.TooSlowError as exc:
            raise BenchError(f"the raw driver did not answer {kind!r} within {timeout} s") from exc

    async def command(self, **command: Any) -> None:
        assert self.driver is not None
        await self.driver.command(**command)

    async def connect(self, sid: str) -> None:
        await self.connect_many([sid])

    async def connect_many(self, ids: list[str]) -> None:
        await self.command(cmd="connect", ids=ids)

    async def fetch_qr(self, sid: str) -> str:
        await self.board.wait(lambda: self.board.qr.get(sid) is not None, 60, f"a QR code for {sid}")
        qr = self.board.qr[sid]
        assert qr is not None
        return qr

    def check_alive(self) -> None:
        if self.driver is not None and self.driver.process.returncode is not None:
            code = self.driver.process.returncode
            raise BenchError(f"the raw driver exited with {code}:\n{self.log_tail()}")

    async def stop(self, timeout: float = 60) -> float:
        """Stop every client cleanly (state saved), then end the process; returns the seconds."""
        started = time.monotonic()
        if self.driver is None or self.driver.process.returncode is not None:
            return 0.0
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, BenchError):
            await self.command(cmd="stop")
            await self.reply("done", timeout)
        await self.driver.exit()
        return time.monotonic() - started

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


# -- pairing ------------------------------------------------------------------------------------


def phone_for(prefix: str, i: int) -> str:
    return f"{prefix}{i:07d}"


async def pair_all(
    system: System,
    sim: SimulatorProcess,
    ids: list[str],
    phones: list[str],
    concurrency: int,
    timeout: float,
) -> float:
    """Connect every session, scan its QR as its own phone, wait until all are connected.

    At most ``concurrency`` pairings are in flight (a pairing uploads 812 prekeys). Returns the wall
    time in seconds.
    """
    board = system.board
    limiter = trio.Semaphore(concurrency)
    started = time.monotonic()

    async def pair(sid: str, phone: str) -> None:
        async with limiter:
            await system.connect(sid)
            for attempt in range(3):
                qr = await system.fetch_qr(sid)
                try:
                    await sim.scan(qr, phone)
                    break
                except BenchError:  # the QR rotated between fetching and scanning
                    if attempt == 2:
                        raise
                    await trio.sleep(0.5)
            await board.wait(lambda: board.states.get(sid) == "connected", timeout, f"{sid} to connect")

    async def progress() -> None:
        while True:
            await trio.sleep(10)
            system.check_alive()
            log(f"{system.name}: {board.count('connected', ids)}/{len(ids)} connected")

    with trio.fail_after(timeout + 5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(progress)
            async with trio.open_nursery() as pairs:
                for sid, phone in zip(ids, phones, strict=True):
                    pairs.start_soon(pair, sid, phone)
            nursery.cancel_scope.cancel()
    return time.monotonic() - started


async def wait_all_connected(system: System, ids: list[str], timeout: float) -> None:
    board = system.board

    async def progress() -> None:
        while True:
            await trio.sleep(5)
            system.check_alive()
            log(f"{system.name}: {board.count('connected', ids)}/{len(ids)} connected")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(progress)
        await board.wait(
            lambda: all(board.states.get(sid) == "connected" for sid in ids),
            timeout,
            f"all {len(ids)} {system.name} sessions to be connected ({board.count('connected', ids)} are)",
        )
        nursery.cancel_scope.cancel()


# -- output -------------------------------------------------------------------------------------


def ratio(ours: float | None, raw: float | None) -> str:
    if ours is None or raw is None or raw == 0:
        return "-"
    return f"{ours / raw:.2f}"


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def add_common_arguments(parser: argparse.ArgumentParser, timeout: float) -> None:
    """The options every simulator benchmark shares."""
    parser.add_argument("--concurrency", type=int, default=20, help="pairings in flight at once")
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds for pairing or restoring all")
    parser.add_argument(
        "--sim-port", type=int, default=None, help="simulator port (default: a free one, leased for the run)"
    )
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data and logs")


def run_benchmark(main_async: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> None:
    """trio.run with a leased simulator port and patched neonize (``args.sim_port``,
    ``args.patched_dir``), and the benchmark's own failures turned into a one-line exit message.
    The service's bytecode is written first, as an installed package has it (pip compiles at
    install; a source checkout's first run writes it): where Python writes none
    (PYTHONDONTWRITEBYTECODE), every start would compile what changed, and the benchmark time it."""
    compileall.compile_dir(ROOT / "waservice", quiet=1)
    with lease_patched_neonize(port=args.sim_port) as patched:
        args.sim_port, args.patched_dir = patched.port, patched.path
        try:
            trio.run(main_async, args)
        except BenchError as exc:
            sys.exit(f"benchmark failed: {exc}")
        except trio.TooSlowError:
            sys.exit("benchmark failed: timed out")
