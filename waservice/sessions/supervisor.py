"""One supervisor task per session: carries out what the state machine decides.

The machine (machine.py) decides; this task waits and calls. The WhatsApp client runs in its own
cancel scope inside the supervisor's nursery: cancelling that scope is how a connection is stopped,
and a new connection starts only after the previous one has stopped.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import attrs
import trio

from ..engine import (
    Client,
    Connected,
    ConnectionLost,
    Engine,
    EngineError,
    EngineEvent,
    LoggedOut,
    Paired,
    QrCode,
    Replaced,
    SentMessage,
    Stopped,
)
from ..errors import SendFailed, SessionNotConnected
from .machine import (
    Effect,
    ForgetCredentials,
    ReconnectPolicy,
    RetryAfter,
    SessionMachine,
    StartClient,
    State,
    StopClient,
)

log = logging.getLogger("waservice.session")

SEND_TIMEOUT = 75.0  # whatsmeow itself gives up waiting for the server's ack after 75 s
EVENT_BUFFER = 16  # engine events not yet applied; a full buffer slows the engine down


@attrs.frozen
class SessionInfo:
    session_id: str
    state: str
    phone_number: str | None
    has_qr: bool
    reconnect_attempts: int
    last_error: str | None
    state_changed_at: float  # unix time


class SessionSupervisor:
    def __init__(self, session_id: str, engine: Engine, directory: Path, policy: ReconnectPolicy) -> None:
        self.session_id = session_id
        self.directory = directory
        self.machine = SessionMachine(policy)
        self.state_changed_at = time.time()
        self._seen_version = self.machine.version
        self._engine = engine
        self._client: Client = engine.client(session_id, directory)
        self._nursery: trio.Nursery | None = None
        self._generation = 0  # events from an older connection are stale
        self._connection: trio.CancelScope | None = None
        self._connection_done = _set_event()
        self._retry: trio.CancelScope | None = None
        self._scope = trio.CancelScope()
        self._finished = trio.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    async def supervise(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled or closed; the client is stopped cleanly on the way out."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                await self._client.close()
            self._finished.set()

    async def close(self) -> None:
        """Stop the client and end the supervisor task."""
        await self.disconnect()
        self._scope.cancel()
        await self._finished.wait()

    def info(self) -> SessionInfo:
        m = self.machine
        return SessionInfo(
            session_id=self.session_id,
            state=m.state.value,
            phone_number=m.phone_number,
            has_qr=m.qr_code is not None,
            reconnect_attempts=m.reconnect_attempts,
            last_error=m.last_error,
            state_changed_at=self.state_changed_at,
        )

    # -- commands (from the API) --------------------------------------------------------------

    def connect(self) -> None:
        self._apply(self.machine.connect())

    async def disconnect(self, reason: str | None = None) -> None:
        """Disconnect and wait until the client has stopped (so its state is saved)."""
        self._apply(self.machine.disconnect(reason))
        await self._connection_done.wait()

    def reset_reconnect(self) -> None:
        self._apply(self.machine.reset_reconnect())

    async def logout(self) -> None:
        if self.machine.state is State.CONNECTED:
            try:
                await self._client.logout()
            except EngineError as exc:
                log.warning("session=%s logout failed: %s", self.session_id, exc)
        await self.disconnect()

    async def send_text(self, number: str, text: str) -> SentMessage:
        state = self.machine.state
        if state is not State.CONNECTED:
            raise SessionNotConnected(f"session '{self.session_id}' is not connected (state: {state.value})")
        with trio.move_on_after(SEND_TIMEOUT) as scope:
            try:
                return await self._client.send_text(number, text)
            except EngineError as exc:
                raise SendFailed(f"message not sent: {exc}") from None
        assert scope.cancelled_caught
        raise SendFailed(
            f"no acknowledgement from WhatsApp within {SEND_TIMEOUT:.0f} s; it may not have been delivered"
        )

    # -- engine events ------------------------------------------------------------------------

    def _on_event(self, generation: int, event: EngineEvent) -> None:
        if generation != self._generation:
            return  # from a connection we already stopped
        m = self.machine
        match event:
            case QrCode(code):
                effects = m.qr(code)
            case Paired(phone):
                effects = m.paired(phone)
            case Connected(phone):
                effects = m.connected(phone)
            case ConnectionLost(reason):
                effects = m.connection_lost(reason)
            case LoggedOut(reason):
                effects = m.logged_out(reason)
            case Stopped(reason) | Replaced(reason):
                effects = m.stopped(reason)
            case _:
                log.warning("session=%s ignored an unknown engine event %r", self.session_id, event)
                return
        self._apply(effects)

    # -- effects ------------------------------------------------------------------------------

    def _apply(self, effects: list[Effect]) -> None:
        """Carry out effects the machine returned (it has already changed state)."""
        for effect in effects:
            match effect:
                case StartClient():
                    self._cancel_retry()
                    self._start_client()
                case StopClient():
                    self._cancel_retry()
                    self._stop_client()
                case RetryAfter(delay):
                    self._schedule_retry(delay)
                case ForgetCredentials():
                    self._require_nursery().start_soon(self._forget_credentials)
        m = self.machine
        if m.version != self._seen_version:
            self._seen_version = m.version
            self.state_changed_at = time.time()
            log.info(
                "session=%s state=%s attempts=%d%s",
                self.session_id,
                m.state.value,
                m.reconnect_attempts,
                f" reason={m.last_error!r}" if m.last_error else "",
            )

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError(f"session {self.session_id!r} is not running")
        return self._nursery

    def _start_client(self) -> None:
        self._generation += 1
        previous, self._connection_done = self._connection_done, trio.Event()
        self._connection = trio.CancelScope()
        self._require_nursery().start_soon(self._run_client, self._generation, self._connection, previous)

    def _stop_client(self) -> None:
        self._generation += 1  # whatever the old client still reports is stale now
        if self._connection is not None:
            self._connection.cancel()
            self._connection = None

    async def _run_client(self, generation: int, scope: trio.CancelScope, previous_done: trio.Event) -> None:
        done = self._connection_done
        reason = None
        try:
            with scope:
                await previous_done.wait()  # the previous connection has stopped (its state is saved)
                send, receive = trio.open_memory_channel[EngineEvent](EVENT_BUFFER)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_events, generation, receive)
                    try:
                        async with send:  # closing it lets the reader finish what is queued
                            await self._client.run(send)
                        reason = "connection closed"
                    except EngineError as exc:
                        reason = str(exc) or "connection failed"
                    except Exception as exc:  # an engine bug must not take the supervisor down
                        log.exception("session=%s engine crashed", self.session_id)
                        reason = f"engine error: {exc!r}"
        finally:
            done.set()
        if reason is not None and not scope.cancelled_caught:
            self._on_event(generation, ConnectionLost(reason))

    async def _read_events(self, generation: int, receive: trio.MemoryReceiveChannel[EngineEvent]) -> None:
        async with receive:
            async for event in receive:
                try:
                    self._on_event(generation, event)
                except Exception:  # a bug in handling one event must not end the session
                    log.exception("session=%s failed to handle %r", self.session_id, event)

    def _schedule_retry(self, delay: float) -> None:
        self._cancel_retry()
        self._retry = trio.CancelScope(deadline=trio.current_time() + delay)
        self._require_nursery().start_soon(self._retry_when_due, self._retry)

    async def _retry_when_due(self, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_forever()
        if scope is self._retry and trio.current_time() >= scope.deadline:
            self._retry = None
            self._apply(self.machine.retry_due())

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.deadline = math.inf
            self._retry.cancel()
            self._retry = None

    async def _forget_credentials(self) -> None:
        await self._connection_done.wait()
        await self._engine.forget_credentials(self.directory)


def _set_event() -> trio.Event:
    event = trio.Event()
    event.set()
    return event
