"""The API-side `Client` of the real engine: a proxy for one session's device in a worker process."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from . import protocol as p
from .base import (
    Client,
    Connected,
    ConnectionLost,
    EngineError,
    EngineEvent,
    EventSender,
    LoggedOut,
    Paired,
    QrCode,
    Replaced,
    SentMessage,
    Stopped,
)
from .content import Attachment, Content, Downloaded, NumberCheck, TypingState

if TYPE_CHECKING:
    from .pool import WorkerPool, WorkerProcess

log = logging.getLogger("waservice.engine")

ROUTE_BUFFER = 64  # events of one attempt not yet taken by its supervisor
# Bounds a clean stop: Go saves the device state within milliseconds; a QR loop is left behind.
STOP_TIMEOUT = 8.0


def to_engine_event(event: p.DeviceEvent) -> EngineEvent:
    match event:
        case p.Qr(code):
            return QrCode(code)
        case p.Paired(phone, _):
            return Paired(phone)
        case p.Connected(phone):
            return Connected(phone)
        case p.Lost(reason):
            return ConnectionLost(reason)
        case p.LoggedOut(reason):
            return LoggedOut(reason)
        case p.Replaced(reason):
            return Replaced(reason)
        case p.Stopped(reason):
            return Stopped(reason)
    raise AssertionError(event)


class Route:
    """Where the pool puts one attempt's events. The pool's reader must never wait for a
    supervisor, so events go into a small buffer that the attempt's `run()` forwards."""

    def __init__(self) -> None:
        self._send, self.events = trio.open_memory_channel[p.DeviceEvent](ROUTE_BUFFER)
        self.reason = ""
        self.over = trio.Event()

    def deliver(self, event: p.DeviceEvent) -> None:
        if self.over.is_set():
            return
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            log.error("dropped %s: its session is not reading its events", type(event).__name__)

    def finish(self, reason: str) -> None:
        if not self.over.is_set():
            self.reason = reason
            self.over.set()
            self._send.close()


class WorkerClient(Client):
    def __init__(self, pool: WorkerPool, session_id: str, directory: Path) -> None:
        self.pool = pool
        self.session_id = session_id
        self.directory = directory
        self._live: tuple[WorkerProcess, int] | None = None  # the running attempt

    async def run(self, events: EventSender) -> None:
        worker = await self.pool.worker_for(self.session_id)
        device = await self.pool.devices.spec(self.session_id, self.directory)
        await trio.to_thread.run_sync(lambda: self.directory.mkdir(parents=True, exist_ok=True))
        attempt = self.pool.next_attempt()
        key = (self.session_id, attempt)
        route = worker.routes[key] = Route()
        try:
            await worker.send(p.Start(self.session_id, attempt, device.db, device.jid, device.new_device))
            self._live = (worker, attempt)
            async for event in route.events:  # ends when the attempt is over
                if isinstance(event, p.Paired) and event.jid:
                    # Before the supervisor hears of it: a crash right after pairing must still
                    # find the account at the next start (on this node or another).
                    await self.pool.devices.paired(self.session_id, event.jid)
                await events.send(to_engine_event(event))
            raise EngineError(route.reason or "connection closed")
        finally:
            self._live = None
            if not route.over.is_set():  # cancelled: stop Go cleanly so it saves its state
                with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
                    try:
                        await worker.send(p.Stop(self.session_id, attempt))
                        await route.over.wait()
                    except EngineError:
                        pass
                if not route.over.is_set():
                    log.warning("session=%s attempt %d did not stop in time", self.session_id, attempt)
            worker.routes.pop(key, None)

    def _running(self) -> tuple[WorkerProcess, int]:
        if self._live is None:
            raise EngineError("not connected")
        return self._live

    async def send(self, chat: str, content: Content) -> SentMessage:
        worker, attempt = self._running()
        reply = await worker.request(
            lambda req: p.Send(req, self.session_id, attempt, chat, content),
            self.session_id,
            f"send to {chat}",
        )
        if reply.sent is None:
            raise EngineError(reply.error or "not sent")
        return SentMessage(id=reply.sent.id, timestamp=reply.sent.timestamp, to=chat)

    async def check_numbers(self, numbers: list[str]) -> list[NumberCheck]:
        worker, attempt = self._running()
        reply = await self._ask(
            worker, lambda req: p.CheckNumbers(req, self.session_id, attempt, numbers), "number check"
        )
        if reply.checks is None:
            raise EngineError("no answer to the number check")
        return reply.checks

    async def pair_code(self, phone: str) -> str:
        worker, attempt = self._running()
        reply = await self._ask(
            worker, lambda req: p.PairCode(req, self.session_id, attempt, phone), "pair code"
        )
        if not reply.code:
            raise EngineError("no pairing code")
        return reply.code

    async def mark_read(self, chat: str, sender: str, message_ids: list[str]) -> None:
        worker, attempt = self._running()
        await self._ask(
            worker,
            lambda req: p.MarkRead(req, self.session_id, attempt, chat, sender, message_ids),
            "mark read",
        )

    async def set_typing(self, chat: str, state: TypingState) -> None:
        worker, attempt = self._running()
        await self._ask(worker, lambda req: p.Typing(req, self.session_id, attempt, chat, state), "typing")

    async def download(self, attachment: Attachment, path: str) -> Downloaded:
        worker, attempt = self._running()
        reply = await self._ask(
            worker, lambda req: p.Download(req, self.session_id, attempt, attachment, path), "download"
        )
        if reply.downloaded is None:
            raise EngineError("nothing downloaded")
        return reply.downloaded

    async def logout(self) -> None:
        worker, attempt = self._running()
        await self._ask(worker, lambda req: p.Logout(req, self.session_id, attempt), "logout")

    async def _ask(
        self, worker: WorkerProcess, message_for: Callable[[int], p.Request], what: str
    ) -> p.Reply:
        """A request to this session's device; the worker's error text becomes an EngineError."""
        reply = await worker.request(message_for, self.session_id, what)
        if reply.error:
            raise EngineError(reply.error)
        return reply

    async def close(self) -> None:
        """`run()` stops its own attempt on cancellation; only the session's place on its worker is
        left to free (a session with this id again is placed anew)."""
        self.pool.release(self.session_id)
