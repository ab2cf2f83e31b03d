"""The worker's command loop: reads commands from the API process, answers, reports events."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from functools import partial
from pathlib import Path

import outcome
import trio

from .. import protocol as p
from ..credentials import CorruptDatabase, check_database
from . import HISTORY_MESSAGES_ENV
from .activity import ActivityWriter
from .device import Attempt, attempt_uuid
from .go import GoBridge, SendError
from .normalize import Normalizer, PhoneBook
from .outgoing import build

log = logging.getLogger("waservice.engine.worker")

# After Stop, Neonize() returns within milliseconds, except while whatsmeow shows a QR code.
STOP_WAIT = 3.0
OUTBOX = 1000  # events and replies waiting for the socket; the API reads continuously


class Worker:
    def __init__(self, go: GoBridge, stream: p.FrameStream, activity: ActivityWriter) -> None:
        self.go = go
        self.stream = stream
        self.activity = activity
        self.attempts: dict[tuple[str, int], Attempt] = {}
        self.phone_books: dict[str, PhoneBook] = {}  # per session, across its attempts
        self.history_messages = os.environ.get(HISTORY_MESSAGES_ENV) == "1"
        self.token = trio.lowlevel.current_trio_token()
        self._outbox, self._outgoing = trio.open_memory_channel[p.Message](OUTBOX)
        # Sends wait up to 75 s each in Go; they get their own threads, apart from start/stop.
        self._send_threads = trio.CapacityLimiter(256)
        self._control_threads = trio.CapacityLimiter(64)

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_loop)
            await self.stream.send(p.Ready(os.getpid()))
            while (message := await self.stream.receive()) is not None:
                if isinstance(message, p.Shutdown):
                    await self._stop_all()
                    break
                nursery.start_soon(self._handle, message)
            nursery.cancel_scope.cancel()  # the API process is gone or asked us to exit

    async def _write_loop(self) -> None:
        async for message in self._outgoing:
            await self.stream.send(message)

    def post(self, message: p.Message) -> None:
        """Thread-safe: queue a message for the API process."""
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(self._queue, message)

    def _queue(self, message: p.Message) -> None:
        try:
            self._outbox.send_nowait(message)
        except trio.WouldBlock:
            log.error("outbox full, dropped %s", type(message).__name__)

    async def _handle(self, message: p.Message) -> None:
        match message:
            case p.Start():
                await self._start(message)
            case p.Stop(session, number):
                await self._stop(session, number)
            case p.Send():
                await self._send(message)
            case p.Logout(req, session, number):
                await self._logout(req, session, number)
            case p.Ping(req):
                live = sum(1 for a in self.attempts.values() if not a.reported_over)
                abandoned = sum(1 for a in self.attempts.values() if a.abandoned)
                self._queue(p.Pong(req, live, abandoned))
            case _:
                log.warning("unexpected message %r", message)

    # -- attempts -------------------------------------------------------------------------------

    async def _start(self, cmd: p.Start) -> None:
        attempt = Attempt(cmd.session, cmd.attempt, cmd.db, self.post, self._normalizer(cmd), self.activity)
        self.attempts[(cmd.session, cmd.attempt)] = attempt
        try:
            # Validate before Go sees it: goneonize aborts the whole process on a db it cannot use.
            await trio.to_thread.run_sync(check_database, Path(cmd.db), limiter=self._control_threads)
        except CorruptDatabase as exc:
            attempt.result = f"device database unusable: {exc}"
        if attempt.stopping or attempt.result:
            del self.attempts[(cmd.session, cmd.attempt)]
            attempt.returned.set()
            if (over := attempt.over(attempt.result or "stopped")) is not None:
                self._queue(over)
            return
        attempt.started = True
        trio.lowlevel.start_thread_soon(
            lambda: self.go.connect(attempt.uuid, attempt.db, attempt),
            lambda result: self.token.run_sync_soon(self._returned, attempt, result),
            name=f"go:{attempt.uuid}",
        )

    def _normalizer(self, cmd: p.Start) -> Normalizer:
        book = self.phone_books.setdefault(cmd.session, PhoneBook())
        lookup = partial(self.go.phone_of, attempt_uuid(cmd.session, cmd.attempt))
        return Normalizer(cmd.session, book, lookup, self.history_messages)

    def _returned(self, attempt: Attempt, result: outcome.Outcome) -> None:
        try:
            attempt.result = result.unwrap() or attempt.stream_error or "connection closed"
        except BaseException as exc:
            attempt.result = f"engine error: {exc!r}"
        attempt.returned.set()
        self.go.forget(attempt.uuid)
        del self.attempts[(attempt.session, attempt.number)]
        if (over := attempt.over(attempt.result)) is not None:
            self._queue(over)

    async def _stop(self, session: str, number: int) -> None:
        attempt = self.attempts.get((session, number))
        if attempt is None:  # never started, or already over
            self._queue(p.AttemptOver(session, number, "stopped"))
            return
        if not attempt.started:  # still being checked: _start sees `stopping` and gives up
            attempt.stopping = True
            return
        if not attempt.stopping:
            attempt.stopping = True
            await trio.to_thread.run_sync(self.go.stop, attempt.uuid, limiter=self._control_threads)
        if attempt.qr_codes == 0 and not attempt.parked:  # a QR loop ignores Stop
            with trio.move_on_after(STOP_WAIT):
                await attempt.returned.wait()
        if (over := attempt.over("stopped")) is not None:
            self._queue(over)
        if attempt.abandoned:
            log.info("session=%s attempt %d left to Go (it showed a QR code)", session, number)

    async def _stop_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for session, number in list(self.attempts):
                nursery.start_soon(self._stop, session, number)

    def _live(self, session: str, number: int) -> Attempt | None:
        attempt = self.attempts.get((session, number))
        return None if attempt is None or attempt.reported_over or attempt.stopping else attempt

    async def _send(self, cmd: p.Send) -> None:
        attempt = self._live(cmd.session, cmd.attempt)
        if attempt is None:
            self._queue(p.Reply(cmd.req, error="not connected"))
            return
        try:
            message_id, timestamp = await trio.to_thread.run_sync(
                self.go.send, attempt.uuid, cmd.chat, build(cmd.content), limiter=self._send_threads
            )
        except SendError as exc:
            self._queue(p.Reply(cmd.req, error=str(exc)))
        else:
            self._queue(p.Reply(cmd.req, sent=p.Sent(message_id, timestamp)))

    async def _logout(self, req: int, session: str, number: int) -> None:
        attempt = self._live(session, number)
        error = "not connected"
        if attempt is not None:
            error = await trio.to_thread.run_sync(self.go.logout, attempt.uuid, limiter=self._control_threads)
        self._queue(p.Reply(req, error=error or None))


async def serve(fd: int, activity_fd: int) -> None:
    sock = socket.socket(fileno=fd)
    stream = p.FrameStream(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
    await Worker(GoBridge(), stream, ActivityWriter(socket.socket(fileno=activity_fd))).serve()
