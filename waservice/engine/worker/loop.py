"""The worker's command loop: reads commands from the API process, answers, reports events."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import outcome
import trio

from .. import protocol as p
from ..content import Attachment, Content, Downloaded, NumberCheck
from ..credentials import CorruptDatabase, check_database
from ..devices import is_postgres
from . import HISTORY_MESSAGES_ENV
from .activity import ActivityWriter
from .device import Attempt, attempt_uuid
from .go import CallError, GoBridge, account_jid, go_jid
from .normalize import Normalizer, PhoneBook, jid_text
from .outgoing import BuildError, build

log = logging.getLogger("waservice.engine.worker")
T = TypeVar("T")

# After Stop, Neonize() returns within milliseconds, except while whatsmeow shows a QR code.
STOP_WAIT = 3.0
OUTBOX = 1000  # events and replies waiting for the socket; the API reads continuously
WRITE_BATCH = 64  # messages written to the socket at once, at most
# A pairing code needs the websocket up, which the first QR code proves: whatsmeow shows it
# within a second or two of dialing.
PAIR_WAIT = 20.0
# Typing states as whatsmeow's (ChatPresence, ChatPresenceMedia): composing/paused, text/audio.
CHAT_PRESENCE = {"composing": (0, 0), "recording": (0, 1), "paused": (1, 0)}


class Worker:
    def __init__(self, go: GoBridge, stream: p.FrameStream, activity: ActivityWriter) -> None:
        self.go = go
        self.stream = stream
        self.activity = activity
        self.attempts: dict[tuple[str, int], Attempt] = {}
        self.phone_books: dict[str, PhoneBook] = {}  # per session, across its attempts
        self.opened = 0  # Neonize() calls: goneonize opens a device store for each, and never closes it
        self.history_messages = os.environ.get(HISTORY_MESSAGES_ENV) == "1"
        self.token = trio.lowlevel.current_trio_token()
        self._outbox, self._outgoing = trio.open_memory_channel[p.Message](OUTBOX)
        # Sends (with their uploads) and the other requests wait up to 75 s each on the network in
        # Go; they get their own threads, apart from start/stop and from each other.
        self._send_threads = trio.CapacityLimiter(256)
        self._call_threads = trio.CapacityLimiter(64)
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
        """One write for whatever is waiting: one syscall and one wake-up of the API process."""
        async for message in self._outgoing:
            messages = [message]
            while len(messages) < WRITE_BATCH:
                try:
                    messages.append(self._outgoing.receive_nowait())
                except trio.WouldBlock:
                    break
            await self.stream.send(*messages)

    def post(self, message: p.Message) -> None:
        """Thread-safe: queue a message for the API process."""
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(self._queue, message)

    def soon(self, fn: Callable[[], object]) -> None:
        """Thread-safe: run `fn` on the trio thread."""
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(fn)

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
            case (
                p.Send()
                | p.CheckNumbers()
                | p.PairCode()
                | p.MarkRead()
                | p.Typing()
                | p.Download()
                | p.Logout()
            ):
                await self._request(message)
            case p.Ping(req):
                live = sum(1 for a in self.attempts.values() if not a.reported_over)
                abandoned = sum(1 for a in self.attempts.values() if a.abandoned)
                self._queue(p.Pong(req, live, abandoned, self.opened))
            case _:
                log.warning("unexpected message %r", message)

    # -- attempts -------------------------------------------------------------------------------

    async def _start(self, cmd: p.Start) -> None:
        attempt = Attempt(
            cmd.session, cmd.attempt, cmd.db, self.post, self._normalizer(cmd), self.activity, self.soon
        )
        self.attempts[(cmd.session, cmd.attempt)] = attempt
        account = b""
        try:
            # Validate before Go sees it: goneonize aborts the whole process on a db it cannot use.
            # A PostgreSQL store is checked by the API process (the account's row, devices.py).
            if not is_postgres(cmd.db):
                await trio.to_thread.run_sync(check_database, Path(cmd.db), limiter=self._control_threads)
            elif not cmd.jid and not cmd.new_device:  # Go would open the store's first account
                raise ValueError("a shared device store needs the account's JID or a new device")
            account = account_jid(cmd.jid) if cmd.jid else b""
        except CorruptDatabase as exc:
            attempt.result = f"device database unusable: {exc}"
        except ValueError as exc:
            attempt.result = f"device account unusable: {exc}"
        if attempt.stopping or attempt.result:
            del self.attempts[(cmd.session, cmd.attempt)]
            attempt.returned.set()
            if (over := attempt.over(attempt.result or "stopped")) is not None:
                self._queue(over)
            return
        attempt.started = True
        self.opened += 1
        trio.lowlevel.start_thread_soon(
            lambda: self.go.connect(attempt.uuid, attempt.db, attempt, account, cmd.new_device),
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
        attempt.settled.set()  # a pairing code waiting for the first QR code: there will be none
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
            attempt.settled.set()  # a pairing code waiting for the first QR code: not any more
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

    # -- requests: one Reply each, an error as text (never a traceback) --------------------------

    async def _request(self, cmd: p.Request) -> None:
        attempt = self._live(cmd.session, cmd.attempt)
        if attempt is None:
            self._queue(p.Reply(cmd.req, error="not connected"))
            return
        try:
            reply = await self._answer(attempt, cmd)
        except (CallError, BuildError) as exc:
            reply = p.Reply(cmd.req, error=str(exc))
        except Exception as exc:  # a bug here must not end the worker's other sessions
            log.exception("session=%s %s failed", cmd.session, type(cmd).__name__)
            reply = p.Reply(cmd.req, error=f"engine error: {type(exc).__name__}")
        self._queue(reply)

    async def _answer(self, attempt: Attempt, cmd: p.Request) -> p.Reply:
        uuid = attempt.uuid
        match cmd:
            case p.Send(req, _, _, chat, content):
                message_id, timestamp = await self._in_thread(
                    self._send_now, attempt, chat, content, limiter=self._send_threads
                )
                return p.Reply(req, sent=p.Sent(message_id, timestamp))
            case p.CheckNumbers(req, _, _, numbers):
                return p.Reply(req, checks=await self._check_numbers(uuid, numbers))
            case p.PairCode(req, _, _, phone):
                return p.Reply(req, code=await self._pair_code(attempt, phone))
            case p.MarkRead(req, _, _, chat, sender, ids):
                await self._in_thread(self.go.mark_read, uuid, chat, sender, ids)
                return p.Reply(req)
            case p.Typing(req, _, _, chat, state):
                presence = CHAT_PRESENCE.get(state)
                if presence is None:  # before Go: it panics on values outside its tables
                    raise CallError(f"unknown typing state {state!r}; use one of {', '.join(CHAT_PRESENCE)}")
                await self._in_thread(self.go.send_chat_presence, uuid, chat, *presence)
                return p.Reply(req)
            case p.Download(req, _, _, attachment, path):
                downloaded = await self._in_thread(self._download_to, uuid, attachment, path)
                return p.Reply(req, downloaded=downloaded)
            case p.Logout(req):
                if error := await self._in_thread(self.go.logout, uuid, limiter=self._control_threads):
                    raise CallError(error)
                return p.Reply(req)
        raise AssertionError(cmd)

    async def _in_thread(
        self, fn: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter | None = None
    ) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter or self._call_threads)

    def _send_now(self, attempt: Attempt, chat: str, content: Content) -> tuple[str, int]:
        """On the send's thread: read and upload media, if any, then send."""
        go_jid(chat)  # a bad chat fails before an upload
        message = build(chat, content, attempt.phone, partial(self.go.upload, attempt.uuid))
        return self.go.send(attempt.uuid, chat, message)

    async def _check_numbers(self, uuid: str, numbers: list[str]) -> list[NumberCheck]:
        found = await self._in_thread(self.go.is_on_whatsapp, uuid, numbers)
        # whatsmeow asks for "+<digits>" and answers with the query beside the account's JID.
        by_number = {answer.Query.lstrip("+"): answer for answer in found}
        checks = []
        for number in numbers:
            answer = by_number.get(number)
            on = answer is not None and answer.IsIn
            checks.append(
                NumberCheck(number=number, on_whatsapp=on, jid=jid_text(answer.JID) if on else None)
            )
        return checks

    async def _pair_code(self, attempt: Attempt, phone: str) -> str:
        with trio.move_on_after(PAIR_WAIT):
            await attempt.settled.wait()
        if attempt.linked:
            raise CallError("this device is already linked to a phone")
        if self._live(attempt.session, attempt.number) is not attempt:
            raise CallError("not connected")
        if attempt.qr_codes == 0:
            raise CallError("the device is not waiting to be linked yet; try again")
        attempt.pair_code_asked = True
        return await self._in_thread(self.go.pair_phone, attempt.uuid, phone)

    def _download_to(self, uuid: str, attachment: Attachment, path: str) -> Downloaded:
        data = self.go.download(uuid, attachment.message)
        try:
            with open(path, "wb") as out:
                out.write(data)
        except OSError as exc:
            raise CallError(f"cannot write the download: {exc.strerror or exc}") from None
        return Downloaded(path=path, size=len(data))


async def serve(fd: int, activity_fd: int) -> None:
    sock = socket.socket(fileno=fd)
    stream = p.FrameStream(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
    await Worker(GoBridge(), stream, ActivityWriter(socket.socket(fileno=activity_fd))).serve()
