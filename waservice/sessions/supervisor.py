"""One supervisor task per session: carries out what the state machine decides.

The machine (machine.py) decides; this task waits and calls. Each connection runs in its own cancel
scope inside the supervisor's nursery, with its own bounded event channel that a task of the
supervisor reads: cancelling the scope stops the connection and drops whatever it still reports.
Work on the device (a connection, forgetting its credentials) forms one chain: each step starts
only once the previous one has finished, so a new connection never meets a half-deleted device.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import attrs
import msgspec
import trio

from ..engine import (
    Client,
    Connected,
    ConnectionLost,
    Engine,
    EngineError,
    EngineEvent,
    LoggedOut,
    OutcomeUnknown,
    Paired,
    QrCode,
    Replaced,
    SentMessage,
    Stopped,
)
from ..engine.content import Content, TypingState
from ..errors import (
    InvalidRequest,
    RequestFailed,
    SendFailed,
    SendOutcomeUnknown,
    ServiceError,
    SessionNotConnected,
    UnknownChat,
)
from ..events.model import SESSION_QR, SESSION_STATUS, Activity
from ..events.types import SessionQr, SessionStatus
from ..metrics import Metrics
from ..store import SessionStore
from .machine import (
    ACTIVE,
    DisableAutoconnect,
    Effect,
    ForgetCredentials,
    IllegalTransition,
    ReconnectPolicy,
    RetryAfter,
    SessionMachine,
    StartClient,
    State,
    StopClient,
)
from .sendqueue import DEFAULT_QUEUE_SIZE, Pacing, SendQueue, before_queueing

log = logging.getLogger("waservice.session")
T = TypeVar("T")

UNKNOWN_OUTCOME = (
    "the outcome is unknown (the message may still be delivered), so check before sending it again"
)
SEND_TIMEOUT = 75.0  # whatsmeow itself gives up waiting for the server's ack after 75 s
CALL_TIMEOUT = 75.0  # whatsmeow's own limit on an answer to a request (an IQ)
EVENT_BUFFER = 64  # a flood (history sync) slows the engine down instead of growing memory
CLOSE_TIMEOUT = 5.0  # releasing a client at the very end; the connection has stopped by then
# Once a pairing code was given, the end of the QR window ends the code too: the reason says both.
PAIR_CODE_EXPIRED = (
    "pairing code and QR code expired without being used; POST /pair-code or /connect for new ones"
)


@attrs.frozen
class SessionInfo:
    session_id: str
    state: str
    phone_number: str | None
    qr_code: str | None
    reconnect_attempts: int
    last_error: str | None
    state_changed_at: float  # unix time
    queue_depth: int = 0  # messages accepted for sending and not yet finished

    @property
    def has_qr(self) -> bool:
        return self.qr_code is not None


@attrs.frozen
class UnlinkResult:
    unlinked: bool  # the device is no longer linked to the phone
    warning: str | None = None  # why it may still be, and what the user can do


class SessionSupervisor:
    def __init__(
        self,
        session_id: str,
        engine: Engine,
        store: SessionStore,
        policy: ReconnectPolicy,
        *,
        down_reason: str | None = None,
        record: Callable[[Activity], None] | None = None,
        metrics: Metrics | None = None,
        pacing: Pacing | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        still_mine: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.session_id = session_id
        # Several nodes: whether this node still owns the session (asked when WhatsApp says another
        # client took the connection; see _replaced). None: one node, which always does.
        self._still_mine = still_mine
        self._metrics = metrics or Metrics()
        self.directory: Path = store.directory(session_id)
        self.machine = SessionMachine(policy, last_error=down_reason)
        self.state_changed_at = time.time()
        self._seen_version = self.machine.version
        self._seen_state = self.machine.state
        self._record = record or (lambda _: None)  # where state changes go as events (the log)
        self._engine = engine
        self._store = store
        self._client: Client = engine.client(session_id, self.directory)
        self._nursery: trio.Nursery | None = None
        self._generation = 0  # events from an older connection are stale
        self._pairing_generation = -1  # the connection that handed out a pairing code
        self._connection: trio.CancelScope | None = None
        self._device_idle = _set_event()  # no connection runs and no credential work is pending
        self._changed = trio.Event()  # set and replaced on every state change
        self._retry: trio.CancelScope | None = None
        self._scope = trio.CancelScope()
        self._finished = trio.Event()
        self._autoconnect: tuple[bool, str | None] = (True, None)
        self._autoconnect_lock = trio.Lock()
        self._queue = SendQueue(session_id, pacing or Pacing(), queue_size)

    # -- lifecycle ----------------------------------------------------------------------------

    async def supervise(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled or closed; the client is stopped cleanly on the way out."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._queue.run, self._deliver, self._show_typing)
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
                await self._client.close()
            self._finished.set()

    async def close(self) -> None:
        """Stop the client and end the supervisor task."""
        await self.disconnect()
        self._scope.cancel()
        await self._finished.wait()

    @property
    def finished(self) -> bool:
        """The supervisor task has ended (closed or cancelled) and released its client."""
        return self._finished.is_set()

    def info(self) -> SessionInfo:
        m = self.machine
        return SessionInfo(
            session_id=self.session_id,
            state=m.state.value,
            phone_number=m.phone_number,
            qr_code=m.qr_code,
            reconnect_attempts=m.reconnect_attempts,
            last_error=m.last_error,
            state_changed_at=self.state_changed_at,
            queue_depth=self._queue.depth,
        )

    async def wait_for(self, done: Callable[[State], bool]) -> State:
        """Wait until the state satisfies `done` (returns at once if it does)."""
        while not done(self.machine.state):
            await self._changed.wait()
        return self.machine.state

    # -- commands (from the API) --------------------------------------------------------------

    def connect(self) -> None:
        self._apply(self.machine.connect())

    async def disconnect(self, reason: str | None = None) -> None:
        """Disconnect and wait until the client has stopped (so its state is saved)."""
        self._apply(self.machine.disconnect(reason))
        await self._device_idle.wait()

    def reset_reconnect(self) -> None:
        self._apply(self.machine.reset_reconnect())

    async def set_autoconnect(self, autoconnect: bool, down_reason: str | None = None) -> None:
        """Store whether the session starts by itself; the last decision wins, whatever the order
        in which concurrent writes finish. Raises StorageFailed."""
        self._autoconnect = (autoconnect, down_reason)
        async with self._autoconnect_lock:
            await self._store.set_autoconnect(self.session_id, *self._autoconnect)

    async def send(self, chat: str, content: Content) -> SentMessage:
        """Send through the session's queue (in order, paced); returns once WhatsApp acknowledged
        the message. Raises SendQueueFull when the queue is full."""
        await before_queueing(self.session_id)  # an Idempotency-Key may answer instead
        self._connected_client()  # fail at once rather than queue for a session that cannot send
        return await self._queue.submit(chat, content)

    @property
    def queue_depth(self) -> int:
        """Messages accepted for sending and not yet finished."""
        return self._queue.depth

    async def _deliver(self, chat: str, content: Content) -> SentMessage:
        """One send, as the queue hands it over: the session must still be connected."""
        client = self._connected_client()
        with trio.move_on_after(SEND_TIMEOUT):
            try:
                return await client.send(chat, content)
            except OutcomeUnknown as exc:
                raise SendOutcomeUnknown(f"{exc}: {UNKNOWN_OUTCOME}") from None
            except EngineError as exc:
                raise _send_failed(chat, exc) from None
        raise SendOutcomeUnknown(
            f"no acknowledgement from WhatsApp within {SEND_TIMEOUT:.0f} s: {UNKNOWN_OUTCOME}"
        )

    async def _show_typing(self, chat: str, state: TypingState) -> None:
        await self._connected_client().set_typing(chat, state)

    async def call(self, what: str, request: Callable[[Client], Awaitable[T]]) -> T:
        """Any other request to the connected client (check numbers, mark read, typing, download).

        `what` names it in errors ("number check failed: ..."). Bounded by CALL_TIMEOUT."""
        client = self._connected_client()
        with trio.move_on_after(CALL_TIMEOUT):
            try:
                return await request(client)
            except EngineError as exc:
                raise RequestFailed(f"{what} failed: {exc}") from None
        raise RequestFailed(f"{what} failed: no answer from WhatsApp within {CALL_TIMEOUT:.0f} s")

    async def pair_code(self, phone: str) -> str:
        """A pairing code for `phone`, while the session shows a QR code (the QR stays valid)."""
        if self.machine.state is not State.QR_READY:
            raise InvalidRequest(
                f"session '{self.session_id}' shows no QR code (state: {self.machine.state.value}); "
                "a pairing code replaces scanning one"
            )
        generation = self._generation
        with trio.move_on_after(CALL_TIMEOUT):
            try:
                code = await self._client.pair_code(phone)
            except EngineError as exc:
                raise RequestFailed(f"pairing code failed: {exc}") from None
            self._pairing_generation = generation
            return code
        raise RequestFailed(f"pairing code failed: no answer from WhatsApp within {CALL_TIMEOUT:.0f} s")

    def _connected_client(self) -> Client:
        state = self.machine.state
        if state is not State.CONNECTED:
            raise SessionNotConnected(f"session '{self.session_id}' is not connected (state: {state.value})")
        return self._client

    async def unlink(self, timeout: float) -> UnlinkResult:
        """Unlink the device from the phone if it has credentials, connecting briefly if need be."""
        if not await self.may_be_paired():
            return UnlinkResult(unlinked=False)  # never paired, or already removed: nothing is linked
        problem = f"WhatsApp did not answer within {timeout:.0f} s"
        with trio.move_on_after(timeout):
            problem = await self._log_out()
            if problem is None:
                return UnlinkResult(unlinked=True)
        await self.disconnect()  # the connection started here, and any pending forgetting, end first
        if not await self.may_be_paired():
            return UnlinkResult(unlinked=True)  # the phone removed it meanwhile
        return UnlinkResult(
            unlinked=False,
            warning=f"could not unlink the device ({problem}); remove it on the phone under Linked devices",
        )

    async def may_be_paired(self) -> bool:
        """Whether the device has credentials; when the engine cannot tell, assume it may."""
        try:
            return await self._engine.has_credentials(self.session_id, self.directory)
        except Exception as exc:  # e.g. an unreadable device store: connecting will say why
            log.warning("session=%s cannot tell whether the device is paired: %r", self.session_id, exc)
            return True

    async def forget_device(self) -> None:
        """On delete, once disconnected: remove the device's keys wherever the engine keeps them (a
        shared PostgreSQL store keeps them outside the folder the session store removes). Before
        the store forgets the session: the registry says which account is the session's."""
        try:
            await self._engine.forget_credentials(self.session_id, self.directory)
        except Exception as exc:  # the folder's removal reports leftover files itself
            log.warning("session=%s could not delete its device's credentials: %r", self.session_id, exc)

    async def _log_out(self) -> str | None:
        """Log out through a connection (started if need be); returns why it could not."""
        self.connect()
        # A QR with credentials on disk is a pairing still being reported: wait for it too.
        state = await self.wait_for(lambda s: s is State.CONNECTED or s not in ACTIVE)
        if state is not State.CONNECTED:
            return self.machine.last_error or f"the session is {state.value}"
        try:
            await self._client.logout()
        except EngineError as exc:
            return str(exc)
        return None

    # -- engine events ------------------------------------------------------------------------

    def _on_event(self, generation: int, event: EngineEvent) -> None:
        if generation != self._generation:
            return  # from a connection we already stopped
        if isinstance(event, QrCode):
            self._metrics.qr_issued()
        try:
            self._apply(self._dispatch(event))
        except IllegalTransition as exc:
            log.error("session=%s ignored %s from the engine: %s", self.session_id, type(event).__name__, exc)
        except Exception:  # a bug here must cost one event, not the service
            log.exception("session=%s failed to handle %r", self.session_id, event)

    def _dispatch(self, event: EngineEvent) -> list[Effect]:
        m = self.machine
        match event:
            case QrCode(code):
                effects = m.qr(code)
                self._report(SESSION_QR, SessionQr(qr=code))
                return effects
            case Paired(phone):
                return m.paired(phone)
            case Connected(phone):
                return m.connected(phone)
            case ConnectionLost(reason):
                return m.connection_lost(reason)
            case LoggedOut(reason):
                return m.logged_out(reason)
            case Stopped(reason):
                if self._pairing_generation == self._generation and "qr code expired" in reason.lower():
                    reason = PAIR_CODE_EXPIRED
                return m.stopped(reason)
            case Replaced(reason) if self._still_mine is not None:
                self._require_nursery().start_soon(self._replaced, self._generation, reason)
                return []
            case Replaced(reason):
                return m.replaced(reason)
            case _:  # e.g. message events of a newer engine: they have their own path, not the machine
                log.warning("session=%s ignored an unknown engine event %r", self.session_id, event)
                return []

    async def _replaced(self, generation: int, reason: str) -> None:
        """With several nodes, a replaced connection may be a former owner's that came back: the
        rightful owner must not stop for good because of it. The lease decides: still ours, it is a
        lost connection (retried with backoff; the stale node stops when it checks its lease); not
        ours, this node stops, leaving the registry alone, and hands the session over at its next
        renewal."""
        assert self._still_mine is not None
        mine = await self._still_mine(self.session_id)
        if generation != self._generation:
            return
        if mine:
            self._on_event(generation, ConnectionLost(f"{reason}; this node owns the session: reconnecting"))
        else:
            self._apply(self.machine.stopped(f"{reason}; the session belongs to another node now"))

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
                    self._metrics.reconnect_scheduled(self.machine.last_error)
                    self._schedule_retry(delay)
                case ForgetCredentials():
                    self._then_on_device(self._forget_credentials)
                case DisableAutoconnect(reason):
                    self._require_nursery().start_soon(self._disable_autoconnect, reason)
        m = self.machine
        if m.version != self._seen_version:
            self._seen_version = m.version
            self.state_changed_at = time.time()
            self._changed.set()
            self._changed = trio.Event()
            if m.state is not self._seen_state:
                self._report_state(self._seen_state)
                self._seen_state = m.state
            self._metrics.state_changed(m.state.value, m.last_error)
            log.info(
                "session=%s state=%s attempts=%d%s",
                self.session_id,
                m.state.value,
                m.reconnect_attempts,
                f" reason={m.last_error!r}" if m.last_error else "",
            )

    def _report_state(self, previous: State) -> None:
        m = self.machine
        self._report(
            SESSION_STATUS,
            SessionStatus(
                state=m.state.value,
                previous_state=previous.value,
                reason=m.last_error,
                phone=m.phone_number,
                reconnect_attempts=m.reconnect_attempts,
            ),
        )

    def _report(self, type_: str, data: msgspec.Struct) -> None:
        now = time.time()
        self._record(
            Activity(
                session_id=self.session_id,
                type=type_,
                timestamp=now,
                data=msgspec.to_builtins(data),
                received=now,
            )
        )

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError(f"session {self.session_id!r} is not running")
        return self._nursery

    def _then_on_device(self, work: Callable[..., Awaitable[None]], *args: object) -> None:
        """Queue `work` on the device: it starts once everything queued before it has finished."""
        previous, self._device_idle = self._device_idle, trio.Event()
        self._require_nursery().start_soon(work, *args, previous, self._device_idle)

    def _start_client(self) -> None:
        self._generation += 1
        self._connection = trio.CancelScope()
        self._then_on_device(self._run_connection, self._generation, self._connection)

    def _stop_client(self) -> None:
        self._generation += 1  # whatever the old client still reports is stale now
        if self._connection is not None:
            self._connection.cancel()
            self._connection = None

    async def _run_connection(
        self, generation: int, scope: trio.CancelScope, previous: trio.Event, done: trio.Event
    ) -> None:
        reason = None
        try:
            with scope:
                await previous.wait()  # the previous connection has stopped (its state is saved)
                send, receive = trio.open_memory_channel[EngineEvent](EVENT_BUFFER)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_events, generation, receive)
                    async with send:  # closing it ends the reader once it has handled every event
                        reason = await self._run_client(send)
        finally:
            done.set()
        if reason is not None and not scope.cancelled_caught:
            self._on_event(generation, ConnectionLost(reason))

    async def _run_client(self, events: trio.MemorySendChannel[EngineEvent]) -> str:
        """Run one connection until it ends by itself; returns why it ended."""
        try:
            await self._client.run(events)
        except EngineError as exc:
            return str(exc) or "connection failed"
        except Exception as exc:  # an engine bug must not take the supervisor down
            log.exception("session=%s engine crashed", self.session_id)
            return f"engine error: {exc!r}"
        return "connection closed"

    async def _read_events(self, generation: int, receive: trio.MemoryReceiveChannel[EngineEvent]) -> None:
        async with receive:
            async for event in receive:
                self._on_event(generation, event)

    async def _forget_credentials(self, previous: trio.Event, done: trio.Event) -> None:
        try:
            await previous.wait()  # the connection that reported the logout has stopped
            await self._engine.forget_credentials(self.session_id, self.directory)
        except Exception as exc:  # OSError, or the engine's: the next connection shows a QR anyway
            log.error(
                "session=%s could not delete the logged-out device's credentials: %r", self.session_id, exc
            )
        finally:
            done.set()

    async def _disable_autoconnect(self, reason: str) -> None:
        try:
            await self.set_autoconnect(False, reason)
        except Exception as exc:  # StorageFailed: it will reconnect after a restart, say so
            log.error("session=%s could not store that it stays down: %s", self.session_id, exc)

    def _schedule_retry(self, delay: float) -> None:
        self._cancel_retry()
        self._retry = trio.CancelScope(deadline=trio.current_time() + delay)
        self._require_nursery().start_soon(self._retry_when_due, self._retry)

    async def _retry_when_due(self, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_forever()
        if scope is self._retry and trio.current_time() >= scope.deadline:
            self._retry = None
            try:
                self._apply(self.machine.retry_due())
            except IllegalTransition:
                log.exception("session=%s retry timer fired in the wrong state", self.session_id)

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.deadline = math.inf
            self._retry.cancel()
            self._retry = None


def _set_event() -> trio.Event:
    event = trio.Event()
    event.set()
    return event


# whatsmeow asks a group's members before it sends to the group; WhatsApp answers a group that does
# not exist with 404 item-not-found and one the account is not in with 403 (whatsmeow's
# ErrGroupNotFound / ErrNotInGroup): the caller named a wrong chat, not a failure of WhatsApp's.
_NO_SUCH_GROUP = ("that group does not exist", "not participating in that group")


# whatsmeow looks up a person's LID before it encrypts to them; WhatsApp has none for a number that is
# not on WhatsApp, and whatsmeow then says "no LID found for <jid> from server".
_NO_SUCH_PERSON = "no LID found for"


def _send_failed(chat: str, exc: EngineError) -> ServiceError:
    text = str(exc)
    if "failed to get group members" in text and any(sign in text.lower() for sign in _NO_SUCH_GROUP):
        return UnknownChat(f"message not sent: no group {chat}, or this account is not in it ({text})")
    if _NO_SUCH_PERSON in text:
        return UnknownChat(f"message not sent: {chat} is not on WhatsApp ({text})")
    return SendFailed(f"message not sent: {text}")
