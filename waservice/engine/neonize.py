"""The real engine: whatsmeow (Go) through neonize. The only module that imports neonize.

Three facts about neonize shape this file (see design.md):
- Go's `Neonize()` blocks for the life of the connection, so each running client occupies one
  worker thread of its own (trio's default thread limiter would cap us at 40 sessions).
- Callbacks arrive on threads created by Go; they only hand events to trio via the TrioToken.
- The Go bridge keeps process-wide maps without locks: concurrent writes (a client starting or
  stopping) and reads (sending) crash the process. `BridgeLock` serialises them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio

# Our users' messages are theirs, not a bot's: neonize would tag every 1:1 message `<bot biz_bot="1"/>`.
os.environ.setdefault("NEONIZE_BOT_TAG", "off")

import neonize
from neonize._binder import func_callback_bytes, func_callback_bytes2, func_string, gocode
from neonize.client import NewClient
from neonize.events import (
    ClientOutdatedEv,
    ConnectedEv,
    ConnectFailureEv,
    DisconnectedEv,
    KeepAliveTimeoutEv,
    LoggedOutEv,
    PairStatusEv,
    StreamErrorEv,
    StreamReplacedEv,
    TemporaryBanEv,
)
from neonize.exc import NeonizeError
from neonize.proto.Neonize_pb2 import ConnectFailureReason
from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps
from neonize.utils import log_whatsmeow
from neonize.utils.enum import LogLevel
from neonize.utils.jid import build_jid

from .base import (
    Connected,
    ConnectionLost,
    Emit,
    EngineError,
    EngineEvent,
    LoggedOut,
    Paired,
    QrCode,
    SentMessage,
    Stopped,
)

log = logging.getLogger("waservice.engine")

DB_NAME = "whatsmeow.db"
# How long a starting client keeps the bridge to itself when no callback says it is past the
# point where Go registers it in its maps (that happens within milliseconds of the call).
START_HOLD = 0.02
# After Stop, connect() returns within milliseconds, except while whatsmeow shows a QR code.
STOP_WAIT = 3.0
STOP_CALL_TIMEOUT = 5.0
QR_CODES_PER_PAIRING = 6  # whatsmeow shows 6 codes (60 s, then 20 s each) before "timeout"


class BridgeLock:
    """Readers/writer lock for the Go bridge: sends share it; starting and stopping clients own it."""

    def __init__(self) -> None:
        self._writer = trio.Lock()  # held by a writer, and briefly by each reader entering
        self._readers = 0
        self._idle = trio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._writer:
            self._readers += 1
            self._idle = trio.Event() if self._readers == 1 else self._idle
        try:
            yield
        finally:
            self._readers -= 1
            if self._readers == 0:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._writer:
            await self._idle.wait()
            yield


# neonize's connect() runs Go's Neonize() on a second thread and polls it every 0.2 s from the
# first, which is most of an idle session's CPU. For the pinned neonize we call Neonize() the same
# way, on our one worker thread; for any other build (another signature) we use connect().
_DIRECT_CONNECT = neonize.__version__ == "0.5.2" and len(gocode.Neonize.argtypes) == 17
# The name the phone shows under "Linked devices".
DEVICE_PROPS = DeviceProps(os="waservice", platformType=DeviceProps.SAFARI).SerializeToString()


def _go_connect(conn: _Connection) -> str:
    """Go's Neonize() with the arguments neonize's connect() would pass; returns its error text."""
    client = conn.client
    subscribed = bytearray(client.event.list_func)  # the event codes with a handler
    callbacks = (
        func_string(lambda _uuid, ptr: conn.on_qr(ctypes.string_at(ptr).decode())),
        func_string(conn.on_login_status),
        func_callback_bytes(client.event.execute),
        func_callback_bytes2(log_whatsmeow),
    )
    level = LogLevel.from_logging(logging.getLogger("neonize.utils.log").getEffectiveLevel()).level
    error = gocode.Neonize(
        client.name.encode(),
        client.uuid,
        b"",
        0,
        0,
        level,
        *callbacks,
        (ctypes.c_char * len(subscribed)).from_buffer(subscribed),
        len(subscribed),
        DEVICE_PROPS,
        len(DEVICE_PROPS),
        b"",
        0,
        None,
    )
    return error.decode() if error else ""


class _Connection:
    """One connection attempt: its own NewClient, Go uuid and worker thread.

    A fresh uuid per attempt keeps attempts apart in Go's maps: a client stopped while showing a QR
    code cannot be waited for (whatsmeow's QR loop ignores Stop until its codes run out, up to
    160 s), so it is left to finish by itself and must not touch its successor.
    """

    def __init__(self, owner: NeonizeClient, number: int) -> None:
        self.owner = owner
        self.number = number
        self.token = trio.lowlevel.current_trio_token()
        self.started = trio.Event()  # Go has registered the client (or the attempt ended)
        self.done = trio.Event()  # connect() returned
        self.outcome: str | None = None
        self.stream_error: str | None = None
        self.qr_codes = 0
        self.stopping = False
        self.client = self._new_client(f"{owner.session_id}.{number}")

    def _new_client(self, uuid: str) -> NewClient:
        client = NewClient(str(self.owner.directory.resolve() / DB_NAME), uuid=uuid)
        # Collecting a NewClient calls Go's Stop(uuid) outside our lock; we stop it ourselves.
        client._stop_finalizer.detach()
        # Registered before connect(): Go takes the list of subscribed events at connect.
        # Plain closures, not bound methods: neonize holds bound methods only weakly.
        client.event.qr(lambda _c, data: self.on_qr(data.decode()))
        for event_type, handler in self._handlers().items():
            client.event(event_type)(_quiet(handler))
        # neonize only print()s the pairing status (where QR expiry shows); we need it as an event.
        client._NewClient__onLoginStatus = self.on_login_status
        return client

    def _handlers(self) -> dict[type, Callable[[Any], None]]:
        reason = ConnectFailureReason.Name
        return {
            PairStatusEv: self._on_pair_status,
            ConnectedEv: lambda _ev: self.post(None),
            DisconnectedEv: lambda _ev: self.post(ConnectionLost(self.stream_error or "connection lost")),
            StreamErrorEv: self._on_stream_error,
            KeepAliveTimeoutEv: lambda ev: log.warning(
                "session=%s keepalive timeout (%d errors)", self.owner.session_id, ev.ErrorCount
            ),
            LoggedOutEv: lambda ev: self.post(
                LoggedOut(f"logged out from the phone ({reason(ev.Reason).lower()})")
            ),
            StreamReplacedEv: lambda _ev: self.post(
                Stopped("connection replaced: this account was opened by another client")
            ),
            TemporaryBanEv: lambda ev: self.post(
                Stopped(f"temporarily banned by WhatsApp (code {ev.Code}, expires in {ev.Expire} s)")
            ),
            ConnectFailureEv: lambda ev: self.post(
                Stopped(f"WhatsApp refused the connection: {reason(ev.Reason)} {ev.Message}")
            ),
            ClientOutdatedEv: lambda _ev: self.post(Stopped("WhatsApp says this client version is outdated")),
        }

    # -- on Go threads: hand over to trio, touch nothing else -------------------------------

    def post(self, event: EngineEvent | None) -> None:
        """`None` means "connected" (the phone number is looked up on the trio side)."""
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(self.owner.deliver, self, event)

    def on_qr(self, code: str) -> None:
        self.qr_codes += 1
        self.post(QrCode(code))

    def _on_pair_status(self, status: Any) -> None:
        if status.Status == status.SUCCESS:
            self.post(Paired(status.ID.User))
        else:
            self.post(ConnectionLost(f"pairing failed: {status.Error}"))

    def _on_stream_error(self, error: Any) -> None:
        self.stream_error = f"stream error {error.Code}" if error.Code else "stream error"

    def on_login_status(self, _uuid: int, status_ptr: int) -> None:
        status = ctypes.string_at(status_ptr).decode() if status_ptr else ""
        if status == "timeout" and self.qr_codes >= QR_CODES_PER_PAIRING:
            self.post(Stopped("QR code expired without being scanned; POST /connect for a new one"))
        elif status == "timeout":  # whatsmeow says "timeout" for any disconnect while pairing
            self.post(ConnectionLost(self.stream_error or "connection lost while waiting for the QR scan"))
        elif status.startswith("err"):
            self.post(ConnectionLost(f"pairing failed: {status}"))

    def run_blocking(self) -> str:
        """On a worker thread: returns only when the connection is over."""
        try:
            error = _go_connect(self) if _DIRECT_CONNECT else self.client.connect()
        except NeonizeError as exc:
            error = str(exc)
        if error:
            return error
        return self.stream_error or "connection closed"

    def finished(self, outcome: Any) -> None:
        """On the worker thread, after connect() returned."""
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(self._over, outcome)

    def _over(self, outcome: Any) -> None:
        try:
            self.outcome = outcome.unwrap()
        except BaseException as exc:
            self.outcome = f"engine error: {exc!r}"
        self.started.set()
        self.done.set()


class NeonizeClient:
    def __init__(self, engine: NeonizeEngine, session_id: str, directory: Path) -> None:
        self.engine = engine
        self.session_id = session_id
        self.directory = directory
        self._attempts = 0
        self._current: _Connection | None = None
        self._emit: Emit | None = None
        self._nursery: trio.Nursery | None = None

    # -- Client interface ----------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._attempts += 1
        conn = self._current = _Connection(self, self._attempts)
        self._emit = emit
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                async with self.engine.bridge.exclusive():
                    trio.lowlevel.start_thread_soon(conn.run_blocking, conn.finished)
                    with trio.move_on_after(START_HOLD):
                        await conn.started.wait()
                try:
                    await conn.done.wait()  # the connection ended by itself
                finally:
                    if not conn.done.is_set():  # cancelled: stop Go cleanly so it saves its state
                        with trio.CancelScope(shield=True):
                            await self._stop(conn)
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = self._emit = None
        raise EngineError(conn.outcome or "connection closed")

    async def _stop(self, conn: _Connection) -> None:
        if conn.stopping:
            return
        conn.stopping = True
        async with self.engine.bridge.exclusive():
            if not conn.done.is_set():
                # Go's Stop disconnects first, and whatsmeow's Disconnect has been seen to hang
                # (after a redial refused with HTTP 503): never hold the bridge for it forever.
                with trio.move_on_after(STOP_CALL_TIMEOUT) as scope:
                    await trio.to_thread.run_sync(conn.client.stop, abandon_on_cancel=True)
                if scope.cancelled_caught:
                    log.warning(
                        "session=%s attempt %d: Go did not stop in time", self.session_id, conn.number
                    )
        if conn.qr_codes == 0:  # a QR loop ignores Stop; anything else returns within milliseconds
            with trio.move_on_after(STOP_WAIT):
                await conn.done.wait()
        if not conn.done.is_set():
            log.debug("session=%s attempt %d left to finish by itself", self.session_id, conn.number)

    def deliver(self, conn: _Connection, event: EngineEvent | None) -> None:
        """On the trio thread: pass on events of the current connection only."""
        conn.started.set()
        if conn is not self._current or self._emit is None or conn.done.is_set():
            return
        if event is None:
            if self._nursery is not None:
                self._nursery.start_soon(self._report_connected, conn)
        else:
            self._emit(event)

    async def _report_connected(self, conn: _Connection) -> None:
        phone = None
        async with self.engine.bridge.shared():
            if not conn.done.is_set():
                with contextlib.suppress(NeonizeError):
                    phone = (await trio.to_thread.run_sync(conn.client.get_me)).JID.User or None
        if conn is self._current and self._emit is not None:
            self._emit(Connected(phone))

    def _live(self) -> _Connection:
        conn = self._current
        if conn is None or conn.done.is_set() or self._emit is None:
            raise EngineError("not connected")
        return conn

    async def send_text(self, number: str, text: str) -> SentMessage:
        conn = self._live()
        async with self.engine.bridge.shared():
            if conn.done.is_set():
                raise EngineError("not connected")
            try:
                response = await trio.to_thread.run_sync(conn.client.send_message, build_jid(number), text)
            except NeonizeError as exc:
                raise EngineError(str(exc)) from None
        return SentMessage(id=response.ID, timestamp=int(response.Timestamp), to=number)

    async def logout(self) -> None:
        try:
            conn = self._live()
        except EngineError:
            return
        async with self.engine.bridge.shared():
            if not conn.done.is_set():
                try:
                    await trio.to_thread.run_sync(conn.client.logout)
                except NeonizeError as exc:
                    raise EngineError(str(exc)) from None

    async def close(self) -> None:
        conn = self._current
        if conn is not None and not conn.done.is_set():
            with trio.CancelScope(shield=True):
                await self._stop(conn)


def _quiet(handler: Callable[[Any], None]) -> Callable[[Any, Any], None]:
    """neonize passes (client, event); an exception here would surface inside Go's callback."""

    def call(_client: Any, event: Any) -> None:
        try:
            handler(event)
        except Exception:
            log.exception("event handler failed")

    return call


class NeonizeEngine:
    name = "neonize"

    def __init__(self) -> None:
        self.bridge = BridgeLock()
        logging.getLogger("neonize.utils.log").setLevel(logging.getLogger("neonize").getEffectiveLevel())
        _silence_stdout()

    def client(self, session_id: str, directory: Path) -> NeonizeClient:
        return NeonizeClient(self, session_id, directory)

    def has_credentials(self, directory: Path) -> bool:
        db = directory / DB_NAME
        if not db.exists():
            return False
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                return conn.execute("SELECT COUNT(*) FROM whatsmeow_device").fetchone()[0] > 0
        except sqlite3.Error:
            return False

    def forget_credentials(self, directory: Path) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            (directory / (DB_NAME + suffix)).unlink(missing_ok=True)


def _silence_stdout() -> None:
    """The Go library fmt.Println()s login events to stdout. Our logs go to stderr, so stdout
    (fd 1) is pointed at /dev/null for the whole process. (Go's println of "Press Ctrl+C to exit"
    goes to stderr, where Go panics go too, so it stays.)"""
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
