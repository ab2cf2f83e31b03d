"""The real engine: whatsmeow (Go) through neonize. The only module that imports neonize.

Three facts about neonize shape this file (see design.md):
- `NewClient.connect()` blocks for the life of the connection, so each running client occupies a
  worker thread from an unbounded limiter (trio's default limiter would cap us at 40 sessions).
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
START_HOLD = 0.05
STOP_TIMEOUT = 10.0


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


class NeonizeClient:
    def __init__(self, engine: NeonizeEngine, session_id: str, directory: Path) -> None:
        self._engine = engine
        self._session_id = session_id
        self._directory = directory
        self._client: NewClient | None = None
        self._emit: Emit | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._started = trio.Event()
        self._thread_done = trio.Event()
        self._thread_done.set()  # no connection thread yet
        self._stream_error: str | None = None
        self._outcome: str | None = None

    # -- one NewClient per session, for its whole life ----------------------------------------

    def _new_client(self) -> NewClient:
        self._directory.mkdir(parents=True, exist_ok=True)
        client = NewClient(str(self._directory.resolve() / DB_NAME), uuid=self._session_id)
        # Collecting a NewClient calls Go's Stop(uuid), which would hit whichever client has that
        # uuid then, outside our lock. We keep this one object and stop it ourselves.
        client._stop_finalizer.detach()
        # Registered once, before any connect(): Go takes the list of subscribed events at connect.
        # Plain closures, not bound methods: neonize holds bound methods only weakly.
        client.event.qr(lambda _c, data: self._post(QrCode(data.decode())))
        handlers: dict[type, Callable[[Any], None]] = {
            PairStatusEv: self._on_pair_status,
            ConnectedEv: lambda _ev: self._post_connected(),
            DisconnectedEv: lambda _ev: self._post(ConnectionLost(self._stream_error or "connection lost")),
            StreamErrorEv: self._on_stream_error,
            KeepAliveTimeoutEv: lambda ev: log.warning(
                "session=%s keepalive timeout (%d errors)", self._session_id, ev.ErrorCount
            ),
            LoggedOutEv: lambda ev: self._post(
                LoggedOut(f"logged out from the phone ({ConnectFailureReason.Name(ev.Reason).lower()})")
            ),
            StreamReplacedEv: lambda _ev: self._post(
                Stopped("connection replaced: this account was opened by another client")
            ),
            TemporaryBanEv: lambda ev: self._post(
                Stopped(f"temporarily banned by WhatsApp (code {ev.Code}, expires in {ev.Expire} s)")
            ),
            ConnectFailureEv: lambda ev: self._post(
                Stopped(
                    f"WhatsApp refused the connection: {ConnectFailureReason.Name(ev.Reason)} {ev.Message}"
                )
            ),
            ClientOutdatedEv: lambda _ev: self._post(
                Stopped("WhatsApp says this client version is outdated")
            ),
        }
        for event_type, handler in handlers.items():
            client.event(event_type)(_quiet(handler))
        # neonize only print()s the pairing status (where QR expiry shows); we need it as an event.
        client._NewClient__onLoginStatus = self._on_login_status
        return client

    # -- Client interface ----------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        if not self._thread_done.is_set():
            raise EngineError("the previous connection is still stopping")
        if self._client is None:
            self._client = self._new_client()
        self._emit, self._token = emit, trio.lowlevel.current_trio_token()
        self._started, self._thread_done = trio.Event(), trio.Event()
        self._stream_error = self._outcome = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                async with self._engine.bridge.exclusive():
                    trio.lowlevel.start_thread_soon(self._connect_blocking, self._thread_finished)
                    with trio.move_on_after(START_HOLD):
                        await self._started.wait()
                try:
                    await self._thread_done.wait()  # the connection ended by itself
                finally:
                    if not self._thread_done.is_set():  # cancelled: stop Go cleanly so it saves state
                        with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
                            await self._stop()
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = self._emit = None
        raise EngineError(self._outcome or "connection closed")

    def _connect_blocking(self) -> str:
        """On a worker thread: neonize's connect() returns only when the connection is over."""
        assert self._client is not None
        try:
            self._client.connect()
        except NeonizeError as exc:
            return str(exc) or "connection failed"
        return self._stream_error or "connection closed"

    def _thread_finished(self, outcome: Any) -> None:
        """On the worker thread, after connect() returned: report back to trio."""
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._connection_over, outcome)

    def _connection_over(self, outcome: Any) -> None:
        try:
            self._outcome = outcome.unwrap()
        except BaseException as exc:
            self._outcome = f"engine error: {exc!r}"
        self._started.set()
        self._thread_done.set()

    @property
    def _running(self) -> bool:
        return not self._thread_done.is_set()

    async def _stop(self) -> None:
        client = self._client
        assert client is not None
        async with self._engine.bridge.exclusive():
            if self._running:
                await trio.to_thread.run_sync(client.stop)
        await self._thread_done.wait()  # connect() returns soon after Stop

    async def send_text(self, number: str, text: str) -> SentMessage:
        client = self._client
        if client is None or not self._running:
            raise EngineError("not connected")
        async with self._engine.bridge.shared():
            if not self._running:
                raise EngineError("not connected")
            try:
                response = await trio.to_thread.run_sync(client.send_message, build_jid(number), text)
            except NeonizeError as exc:
                raise EngineError(str(exc)) from None
        return SentMessage(id=response.ID, timestamp=int(response.Timestamp), to=number)

    async def logout(self) -> None:
        client = self._client
        if client is None or not self._running:
            return
        async with self._engine.bridge.shared():
            if self._running:
                try:
                    await trio.to_thread.run_sync(client.logout)
                except NeonizeError as exc:
                    raise EngineError(str(exc)) from None

    async def close(self) -> None:
        if self._client is not None and self._running:
            with trio.move_on_after(STOP_TIMEOUT):
                await self._stop()

    # -- from Go threads ------------------------------------------------------------------------

    def _post(self, event: EngineEvent) -> None:
        """Called on a Go thread: hand the event to trio, never touch trio objects here."""
        token = self._token
        if token is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self._deliver, event)

    def _deliver(self, event: EngineEvent) -> None:
        self._started.set()
        if self._emit is not None:
            self._emit(event)

    def _on_pair_status(self, status: Any) -> None:
        if status.Status == status.SUCCESS:
            self._post(Paired(status.ID.User))
        else:
            self._post(ConnectionLost(f"pairing failed: {status.Error}"))

    def _on_stream_error(self, error: Any) -> None:
        self._stream_error = f"stream error {error.Code}" if error.Code else "stream error"

    def _on_login_status(self, _uuid: int, status_ptr: int) -> None:
        status = ctypes.string_at(status_ptr).decode() if status_ptr else ""
        if status == "timeout":
            self._post(Stopped("QR code expired without being scanned; POST /connect for a new one"))
        elif status.startswith("err"):
            self._post(ConnectionLost(f"pairing failed: {status}"))

    def _post_connected(self) -> None:
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._spawn_report_connected)

    def _spawn_report_connected(self) -> None:
        self._started.set()
        if self._nursery is not None:
            self._nursery.start_soon(self._report_connected)

    async def _report_connected(self) -> None:
        phone = None
        client = self._client
        async with self._engine.bridge.shared():
            if self._running and client is not None:
                with contextlib.suppress(NeonizeError):
                    phone = (await trio.to_thread.run_sync(client.get_me)).JID.User or None
        if self._emit is not None:
            self._emit(Connected(phone))


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


def _silence_stdout() -> None:
    """The Go library prints to stdout ("Press Ctrl+C to exit", login events) on every connect.
    Our logs go to stderr, so stdout (fd 1) is pointed at /dev/null for the whole process."""
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)

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
