"""Drive the real engine's worker pool directly (no HTTP), against the simulator.

The pytest process never imports neonize: the workers do, with the patched copy first on their path.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from tests.wasim import Simulator
from waservice.config import EngineConfig
from waservice.engine import Connected, ConnectionLost, EngineError, EngineEvent, QrCode, SentMessage
from waservice.engine.content import Text
from waservice.engine.devices import DeviceStore
from waservice.engine.launch import HeadStart
from waservice.engine.pool import WorkerPool, open_pool
from waservice.engine.proxy import WorkerClient
from waservice.events.model import Activity, ActivitySink


@contextlib.asynccontextmanager
async def pool_on(
    patched_dir: Path,
    activity: ActivitySink | None = None,
    env: dict[str, str] | None = None,
    devices: DeviceStore | None = None,
    head_start: HeadStart | None = None,
    **config: object,
) -> AsyncIterator[WorkerPool]:
    """Without an `activity` sink, the pool's activity is read and dropped. `env` is added to the
    workers' environment (Go reads SSL_CERT_FILE only at start: the media host's test CA).
    `devices`: where the devices are stored (None: SQLite files in the session folders)."""
    settings = {"workers": 2, "ping_interval": 1.0, "ping_timeout": 20.0, **config}
    async with contextlib.AsyncExitStack() as stack:
        if activity is None:
            activity, dropped = trio.open_memory_channel[Activity](0)
            nursery = await stack.enter_async_context(trio.open_nursery())
            nursery.start_soon(_drop, dropped)
            stack.callback(nursery.cancel_scope.cancel)
        env = {**(env or {}), "PYTHONPATH": str(patched_dir)}
        pool = open_pool(EngineConfig(**settings), activity, env, devices=devices, head_start=head_start)  # type: ignore[arg-type]
        yield await stack.enter_async_context(pool)


async def _drop(activity: trio.MemoryReceiveChannel[Activity]) -> None:
    async for _ in activity:
        pass


class Device:
    """One session's client, run in a loop like a supervisor would (reconnect at once)."""

    def __init__(self, pool: WorkerPool, session_id: str, directory: Path) -> None:
        self.session_id = session_id
        self.client: WorkerClient = pool.client(session_id, directory)
        self.events: list[EngineEvent] = []
        self.ends: list[str] = []  # why each attempt ended
        self._changed = trio.Event()
        self._scope: trio.CancelScope | None = None
        self.reconnect = True
        self.done = trio.Event()  # run() returned (after stop(): the client stopped cleanly)

    async def send_text(self, number: str, text: str) -> SentMessage:
        return await self.client.send(f"{number}@s.whatsapp.net", Text(text=text))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await self._run()
        finally:
            self.done.set()

    async def _run(self) -> None:
        while True:
            with trio.CancelScope() as self._scope:
                send, receive = trio.open_memory_channel[EngineEvent](16)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._collect, receive)
                    try:
                        async with send:
                            await self.client.run(send)
                        self._end("returned")
                    except EngineError as exc:
                        self._end(str(exc))
            if self._scope.cancelled_caught or not self.reconnect:
                return
            await trio.sleep(0.2)

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _collect(self, receive: trio.MemoryReceiveChannel[EngineEvent]) -> None:
        async for event in receive:
            self.events.append(event)
            self._poke()

    def _end(self, reason: str) -> None:
        self.ends.append(reason)
        self.events.append(ConnectionLost(f"attempt over: {reason}"))
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def count(self, kind: type) -> int:
        return sum(isinstance(e, kind) for e in self.events)

    async def wait(self, kind: type, after: int = 0, timeout: float = 30) -> EngineEvent:
        with trio.fail_after(timeout):
            while True:
                for event in self.events[after:]:
                    if isinstance(event, kind):
                        return event
                await self._changed.wait()

    @property
    def connected(self) -> bool:
        last = next((e for e in reversed(self.events) if isinstance(e, Connected | ConnectionLost)), None)
        return isinstance(last, Connected)


async def pair(sim: Simulator, device: Device, phone: str) -> None:
    qr = await device.wait(QrCode)
    assert isinstance(qr, QrCode)
    sim.scan_qr(qr.code, phone)
    await device.wait(Connected, after=device.events.index(qr))
