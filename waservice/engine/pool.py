"""The worker pool (API side): spawns engine worker processes, keeps them alive, routes messages.

Each worker is a process of its own (launch.py). The API and a worker talk over a
socketpair with protocol.py's frames; a second socketpair carries only activity (messages,
receipts...), written by the worker straight from Go's callback threads and read here into the
activity sink (a frame the worker wrote outlives the worker: it waits in the kernel).
A worker's death ends the attempts of its own sessions (each supervisor sees ConnectionLost with
the reason and reconnects through its backoff); the pool restarts the worker once the old process
has exited, so a device never has two live clients.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
from collections import Counter, deque
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import trio

from ..config import EngineConfig, EventsConfig
from ..events.model import ActivitySink
from ..metrics import restart_cause
from . import protocol as p
from .base import EngineError, OutcomeUnknown
from .devices import DeviceStore
from .launch import HeadStart, launch, worker_environment
from .policy import Limits, RestartBackoff, Usage, death_reason, pick_worker, recycle_reason
from .proxy import Route, WorkerClient
from .sqlite_devices import SqliteDevices

log = logging.getLogger("waservice.engine.pool")

READY_TIMEOUT = 60.0  # importing neonize takes 0.5-0.8 s on an idle box; far more under load
SHUTDOWN_WAIT = 10.0  # a worker stops its clients (Go saves their state) before it exits
STDERR_TAIL = 40
_LOG_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}
_GO_NOISE = ("Press Ctrl+C to exit",)


class _Pending:
    def __init__(self, session: str, what: str) -> None:
        self.session = session
        self.what = what
        self.done = trio.Event()
        self.reply: p.Reply | None = None
        self.error: str | None = None
        self.unknown = False  # the worker got the request and died before answering
        self.abandoned = False  # the caller gave up (its deadline); a late reply is only logged


class WorkerProcess:
    """One running worker process and everything in flight on it."""

    def __init__(
        self, index: int, process: trio.Process, stream: p.FrameStream, activity: p.FrameStream
    ) -> None:
        self.index = index
        self.process = process
        self.stream = stream
        self.activity = activity
        self.activity_done = trio.Event()  # its activity socket reached EOF (or the sink closed)
        self.routes: dict[tuple[str, int], Route] = {}
        self.pending: dict[int, _Pending] = {}
        self.ready = trio.Event()
        self.exited = trio.Event()
        self.reason = ""
        self.recycling: str | None = None
        self.killed: str | None = None  # why the pool killed it (it stopped answering)
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.stderr_done = trio.Event()
        self.pong: p.Pong | None = None
        self._pong_event = trio.Event()
        self._requests = itertools.count(1)

    @property
    def alive(self) -> bool:
        return self.ready.is_set() and not self.exited.is_set() and self.recycling is None

    @property
    def recycled_reason(self) -> str | None:
        """What its sessions are told when the pool replaced it on purpose; None if it was not."""
        if self.recycling is None:
            return None
        return f"engine worker {self.index} was recycled ({self.recycling})"

    async def send(self, message: p.Message) -> None:
        try:
            await self.stream.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise EngineError(self.reason or f"engine worker {self.index} is gone") from None

    async def request(self, message_for: object, session: str, what: str) -> p.Reply:
        """Send a request built by `message_for(req)` and wait for its reply; cancellable."""
        req = next(self._requests)
        pending = self.pending[req] = _Pending(session, what)
        try:
            await self.send(message_for(req))  # type: ignore[operator]
            await pending.done.wait()
        except BaseException:
            if not pending.done.is_set():
                pending.abandoned = True
            raise
        if pending.error is not None:
            raise (OutcomeUnknown if pending.unknown else EngineError)(pending.error)
        assert pending.reply is not None
        return pending.reply

    def on_reply(self, reply: p.Reply) -> None:
        pending = self.pending.pop(reply.req, None)
        if pending is None:
            return
        if pending.abandoned:
            sent = f"message id {reply.sent.id}" if reply.sent else f"error: {reply.error}"
            log.warning(
                "session=%s %s answered after the caller gave up (%s)", pending.session, pending.what, sent
            )
            return
        pending.reply = reply
        pending.done.set()

    def on_pong(self, pong: p.Pong) -> None:
        self.pong = pong
        self._pong_event.set()

    async def ping(self, timeout: float) -> p.Pong | None:
        self._pong_event = trio.Event()
        await self.send(p.Ping(next(self._requests)))
        with trio.move_on_after(timeout):
            await self._pong_event.wait()
            return self.pong
        return None

    def died(self, reason: str) -> None:
        """End everything in flight: attempts get ConnectionLost, requests an error."""
        self.reason = reason
        for route in list(self.routes.values()):
            route.finish(reason)
        for pending in self.pending.values():
            pending.error = f"{reason} before answering the {pending.what}"
            pending.unknown = True
            pending.done.set()
        self.pending.clear()
        self.exited.set()

    def usage(self) -> Usage:
        return Usage(
            open_fds=_count_fds(self.process.pid),
            rss_mb=_rss_mb(self.process.pid),
            abandoned=self.pong.abandoned if self.pong else 0,
            clients=self.pong.devices if self.pong else 0,
            stale_stores=self.pong.opened - self.pong.devices if self.pong else 0,
        )


@attrs.define
class WorkerStats:
    index: int
    pid: int | None
    state: str  # running, starting, restarting
    sessions: int
    open_fds: int
    rss_mb: float
    abandoned: int
    restarts: int
    last_exit: str | None


class _Slot:
    """Worker number `index`: one process at a time, restarted when it dies."""

    def __init__(self, index: int, config: EngineConfig) -> None:
        self.index = index
        self.current: WorkerProcess | None = None
        self.changed = trio.Event()  # set (and replaced) on every change of the fields below
        self.down_reason: str | None = None  # set while waiting to restart after a crash
        self.sessions: set[str] = set()
        self.backoff = RestartBackoff(config.restart_delay, config.restart_max_delay)
        self.restarts = 0

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    @property
    def live(self) -> WorkerProcess | None:
        return self.current if self.current is not None and self.current.alive else None


class WorkerPool:
    """The `neonize` engine: an `Engine` whose clients live in worker processes."""

    name = "neonize"

    def __init__(
        self,
        config: EngineConfig,
        activity: ActivitySink,
        env: dict[str, str] | None = None,
        events: EventsConfig | None = None,
        devices: DeviceStore | None = None,
        head_start: HeadStart | None = None,
    ) -> None:
        """`env`: added to the workers' environment; `head_start`: workers launched already (with
        the environment they were launched with), each slot's first."""
        self.config = config
        self.activity = activity
        self.devices: DeviceStore = devices or SqliteDevices()
        self.limits = Limits(
            config.max_leaked_fds,
            config.max_rss_mb,
            config.max_abandoned_clients,
            self.devices.max_stale_stores,
        )
        self._head_start = head_start
        if head_start is not None:
            self._env = head_start.env
        else:
            self._env = worker_environment(env, events)
        self.restart_causes: Counter[str] = Counter()  # for /metrics
        self._slots = [_Slot(i, config) for i in range(config.workers)]
        self._assigned: dict[str, _Slot] = {}
        self._attempts = itertools.count(1)
        self._closing = False

    # -- Engine interface -------------------------------------------------------------------------

    def client(self, session_id: str, directory: Path) -> WorkerClient:
        return WorkerClient(self, session_id, directory)

    async def has_credentials(self, session_id: str, directory: Path) -> bool:
        return await self.devices.has_credentials(session_id, directory)

    async def forget_credentials(self, session_id: str, directory: Path) -> None:
        await self.devices.forget(session_id, directory)

    # -- what clients use -------------------------------------------------------------------------

    def next_attempt(self) -> int:
        return next(self._attempts)

    def slot_of(self, session_id: str) -> _Slot:
        slot = self._assigned.get(session_id)
        if slot is None:
            slot = self._slots[pick_worker([len(s.sessions) for s in self._slots])]
            slot.sessions.add(session_id)
            self._assigned[session_id] = slot
        return slot

    def release(self, session_id: str) -> None:
        """The session is gone for good (deleted): its place on a worker is free."""
        slot = self._assigned.pop(session_id, None)
        if slot is not None:
            slot.sessions.discard(session_id)

    async def worker_for(self, session_id: str) -> WorkerProcess:
        """The session's worker once it is up; EngineError while it waits to restart after crashes."""
        slot = self.slot_of(session_id)
        with trio.move_on_after(READY_TIMEOUT):
            while True:
                if (worker := slot.live) is not None:
                    return worker
                if slot.down_reason is not None:
                    raise EngineError(slot.down_reason)
                if self._closing:
                    raise EngineError("the engine is shutting down")
                await slot.changed.wait()
        raise EngineError(f"engine worker {slot.index} did not start in {READY_TIMEOUT:.0f} s")

    def stats(self) -> list[WorkerStats]:
        """Per worker: pid, sessions, open fds, RSS (read from /proc), abandoned QR-phase clients."""
        result = []
        for slot in self._slots:
            worker = slot.current
            usage = worker.usage() if worker is not None and worker.alive else Usage(0, 0.0, 0)
            state = "running" if worker is not None and worker.alive else "starting"
            if slot.down_reason is not None:
                state = "restarting"
            result.append(
                WorkerStats(
                    slot.index,
                    worker.process.pid if worker is not None else None,
                    state,
                    len(slot.sessions),
                    usage.open_fds,
                    usage.rss_mb,
                    usage.abandoned,
                    slot.restarts,
                    slot.down_reason,
                )
            )
        return result

    # -- running the workers ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[WorkerPool] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every worker and keep them running until cancelled. Ready at once: a worker takes
        0.5-1 s to load Go, which the service spends starting up too (a client waits for its
        worker in `worker_for`)."""
        async with trio.open_nursery() as nursery:
            for slot in self._slots:
                nursery.start_soon(self._keep_running, slot)
            task_status.started(self)

    async def shutdown(self) -> None:
        """Ask every worker to stop its clients and exit; bounded by SHUTDOWN_WAIT."""
        self._closing = True
        with trio.move_on_after(SHUTDOWN_WAIT):
            async with trio.open_nursery() as nursery:
                for slot in self._slots:
                    if slot.current is not None and not slot.current.exited.is_set():
                        nursery.start_soon(self._stop_worker, slot.current, "shutting down")

    async def _stop_worker(self, worker: WorkerProcess, why: str) -> None:
        worker.recycling = why
        with contextlib.suppress(EngineError):
            await worker.send(p.Shutdown())
        with trio.move_on_after(SHUTDOWN_WAIT):
            await worker.exited.wait()
        if not worker.exited.is_set():
            log.warning("engine worker %d did not exit in %.0f s: killing it", worker.index, SHUTDOWN_WAIT)
            worker.process.kill()

    async def _keep_running(self, slot: _Slot) -> None:
        while not self._closing:
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                try:
                    worker = await self._spawn(nursery, slot.index)
                except (OSError, EngineError) as exc:
                    crashed, reason = True, f"engine worker {slot.index} could not start: {exc}"
                    nursery.cancel_scope.cancel()
                else:
                    slot.current, slot.down_reason = worker, None
                    slot.notify()
                    nursery.start_soon(self._watch, worker, slot)
                    await worker.exited.wait()
                    slot.current = None
                    slot.notify()
                    crashed, reason = worker.recycling is None, worker.reason
                    nursery.cancel_scope.cancel()
            if self._closing:
                return
            slot.restarts += 1
            self.restart_causes[restart_cause(reason)] += 1
            delay = slot.backoff.after_exit(trio.current_time() - started, crashed)
            log.warning("%s; restarting%s", reason, f" in {delay:.0f} s" if delay else "")
            if delay:
                slot.down_reason = f"{reason}; restarting in {delay:.0f} s"
                slot.notify()  # waiting clients report the reason instead of waiting
                await trio.sleep(delay)
            slot.down_reason = None

    async def _spawn(self, nursery: trio.Nursery, index: int) -> WorkerProcess:
        launched = self._head_start.take() if self._head_start is not None else None
        if launched is None:
            launched = await launch(self._env)
        try:
            await nursery.start(_own, launched.process)
        except BaseException:
            await launched.discard()
            raise
        process = launched.process
        worker = WorkerProcess(index, process, _frames(launched.stream), _frames(launched.activity))
        nursery.start_soon(self._read_stderr, worker)
        nursery.start_soon(self._read_frames, worker)
        nursery.start_soon(self._read_activity, worker)
        with trio.move_on_after(READY_TIMEOUT):
            await worker.ready.wait()
        if not worker.ready.is_set():
            process.kill()
            await worker.exited.wait()
            raise EngineError(f"not ready in {READY_TIMEOUT:.0f} s ({worker.reason})")
        log.info("engine worker %d started (pid %d)", index, process.pid)
        return worker

    async def _read_frames(self, worker: WorkerProcess) -> None:
        try:
            while (message := await worker.stream.receive()) is not None:
                self._dispatch(worker, message)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, p.ProtocolError) as exc:
            log.warning("engine worker %d: connection broken: %s", worker.index, exc)
        # EOF: the worker exited (or is exiting): wait for it, and for its last stderr lines.
        with trio.CancelScope(shield=True):
            with trio.move_on_after(SHUTDOWN_WAIT):
                await worker.process.wait()
            if worker.process.returncode is None:
                worker.process.kill()
                await worker.process.wait()
            with trio.move_on_after(2):
                await worker.stderr_done.wait()
            # What the worker wrote before it died is still in the kernel: into the sink with it
            # before the worker counts as gone (and its slot's nursery, the reader's, is cancelled).
            with trio.move_on_after(SHUTDOWN_WAIT):
                await worker.activity_done.wait()
            if not worker.activity_done.is_set():
                log.error("engine worker %d: its last activity did not fit in the sink in time", worker.index)
        if worker.killed is not None:
            reason = f"engine worker {worker.index} {worker.killed}; killed"
        elif worker.recycled_reason is not None:
            reason = worker.recycled_reason
        else:
            reason = death_reason(worker.index, worker.process.returncode, worker.stderr_tail)
        worker.died(reason)
        await worker.stream.stream.aclose()

    async def _read_activity(self, worker: WorkerProcess) -> None:
        """Activity frames into the sink, until the worker's end closes. A sink that is behind
        holds this reader, then the socket, then Go's callback (backpressure, nothing dropped)."""
        try:
            while (message := await worker.activity.receive()) is not None:
                if isinstance(message, p.Happened):
                    await self.activity.send(message.activity)
                else:
                    log.warning(
                        "engine worker %d: %s on its activity socket", worker.index, type(message).__name__
                    )
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, p.ProtocolError) as exc:
            log.warning("engine worker %d: activity lost: %s", worker.index, exc)
        finally:
            worker.activity_done.set()
            with trio.CancelScope(shield=True):
                await worker.activity.stream.aclose()

    def _dispatch(self, worker: WorkerProcess, message: p.Message) -> None:
        match message:
            case p.Event(session, attempt, event):
                route = worker.routes.get((session, attempt))
                if route is not None:
                    route.deliver(event)
            case p.AttemptOver(session, attempt, reason):
                route = worker.routes.get((session, attempt))
                if route is not None:
                    route.finish(worker.recycled_reason or reason)
            case p.Reply():
                worker.on_reply(message)
            case p.Pong():
                worker.on_pong(message)
            case p.Ready():
                worker.ready.set()
            case _:
                log.warning("engine worker %d sent an unexpected %s", worker.index, type(message).__name__)

    async def _read_stderr(self, worker: WorkerProcess) -> None:
        """Log what the worker writes to stderr: its own log lines, and Go's panics."""
        assert worker.process.stderr is not None
        buffer = b""
        try:
            async for chunk in worker.process.stderr:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._stderr_line(worker, line.decode(errors="replace"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if buffer:
                self._stderr_line(worker, buffer.decode(errors="replace"))
            worker.stderr_done.set()

    def _stderr_line(self, worker: WorkerProcess, line: str) -> None:
        if not line.strip() or line.startswith(_GO_NOISE):
            return
        worker.stderr_tail.append(line)
        level_name, _, rest = line.partition(" ")
        level = _LOG_LEVELS.get(level_name)
        if level is not None:
            log.log(level, "worker %d: %s", worker.index, rest)
        else:  # not a Python log line: a Go panic, a fatal error, a traceback
            log.warning("worker %d stderr: %s", worker.index, line)

    async def _watch(self, worker: WorkerProcess, slot: _Slot) -> None:
        """Ping the worker; kill it if it hangs; recycle it past its limits."""
        while True:
            await trio.sleep(self.config.ping_interval)
            try:
                pong = await worker.ping(self.config.ping_timeout)
            except EngineError:
                return
            if pong is None:
                worker.killed = f"did not answer a ping in {self.config.ping_timeout:.0f} s"
                log.error("engine worker %d %s: killing it", worker.index, worker.killed)
                worker.process.kill()
                return
            usage = worker.usage()
            log.debug(
                "engine worker %d pid %d: %d attempts, %d open fds, %.0f MB resident, %d abandoned",
                worker.index,
                worker.process.pid,
                pong.devices,
                usage.open_fds,
                usage.rss_mb,
                usage.abandoned,
            )
            why = recycle_reason(usage, self.limits)
            if why is not None:
                log.warning("engine worker %d: recycling it: %s", worker.index, why)
                worker.recycling = why
                slot.notify()
                await self._stop_worker(worker, why)
                return


@contextlib.asynccontextmanager
async def open_pool(
    config: EngineConfig,
    activity: ActivitySink,
    env: dict[str, str] | None = None,
    events: EventsConfig | None = None,
    devices: DeviceStore | None = None,
    head_start: HeadStart | None = None,
) -> AsyncIterator[WorkerPool]:
    """The pool, its workers starting (a client waits for its own); on exit they stop their
    clients and exit."""
    pool = WorkerPool(config, activity, env, events, devices, head_start)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        try:
            yield pool
        finally:
            with trio.CancelScope(shield=True):
                await pool.shutdown()
            nursery.cancel_scope.cancel()


async def _own(
    process: trio.Process, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """A slot's hold on its worker process: if the slot is cancelled first, the process is killed
    and reaped. By then the pool has asked it to stop (Shutdown) and waited; a worker ignores
    SIGTERM (the process group's signal is the API's to handle), so SIGKILL it is."""
    task_status.started()
    try:
        await process.wait()
    except BaseException:
        with trio.CancelScope(shield=True):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        raise


def _frames(sock: socket.socket) -> p.FrameStream:
    return p.FrameStream(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))


def _count_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0
