"""The session state machine: pure, no I/O, no clock.

It takes commands (from the API), a timer (retry due) and engine events (from WhatsApp) and returns
the effects the supervisor must carry out. Every way a session can change state is in TRANSITIONS.
An input a state does not list is either stale (engine events once no connection runs: they come
from a client already stopped) and ignored, or a bug, and raises IllegalTransition.
"""

from __future__ import annotations

import enum

import attrs

__all__ = [
    "DisableAutoconnect",
    "Effect",
    "ForgetCredentials",
    "IllegalTransition",
    "Input",
    "ReconnectPolicy",
    "RetryAfter",
    "SessionMachine",
    "StartClient",
    "State",
    "StopClient",
]


class State(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    QR_READY = "qr_ready"
    CONNECTED = "connected"
    ERROR = "error"
    FAILED = "failed"


class Input(enum.Enum):
    # commands
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    RESET_RECONNECT = "reset_reconnect"
    # timer
    RETRY_DUE = "retry_due"
    # engine events
    QR = "qr"
    PAIRED = "paired"
    CONNECTED = "connected"
    CONNECTION_LOST = "connection_lost"  # with reconnect attempts left
    GIVE_UP = "give_up"  # connection lost with none left
    LOGGED_OUT = "logged_out"
    STOPPED = "stopped"  # QR expired, ban, outdated client: retrying cannot help
    REPLACED = "replaced"  # another client took the account


class IllegalTransition(Exception):
    """An input the current state cannot take: a bug in the supervisor or the engine."""

    def __init__(self, state: State, what: Input) -> None:
        super().__init__(f"{what.value} is not allowed in state {state.value}")
        self.state = state
        self.input = what


@attrs.frozen
class StartClient:
    pass


@attrs.frozen
class StopClient:
    pass


@attrs.frozen
class RetryAfter:
    delay: float


@attrs.frozen
class ForgetCredentials:
    """Delete the device's credentials once the connection that reported the logout has stopped."""


@attrs.frozen
class DisableAutoconnect:
    """Store that the session stays down across restarts, and why."""

    reason: str


Effect = StartClient | StopClient | RetryAfter | ForgetCredentials | DisableAutoconnect

S, In = State, Input
ACTIVE = frozenset({S.CONNECTING, S.QR_READY, S.CONNECTED})  # a client is running
_ALL = frozenset(State)
_ENGINE_EVENTS = frozenset(
    {In.QR, In.PAIRED, In.CONNECTED, In.CONNECTION_LOST, In.GIVE_UP, In.LOGGED_OUT, In.STOPPED, In.REPLACED}
)


@attrs.frozen
class Move:
    to: State | None  # None: stay
    effects: tuple[type[Effect], ...] = ()


_STAY = Move(None)

# state x input -> next state and effects; one screen, every way a session can move.
TRANSITIONS: dict[tuple[State, Input], Move] = {
    **{(s, In.CONNECT): Move(S.CONNECTING, (StartClient,)) for s in (S.DISCONNECTED, S.ERROR, S.FAILED)},
    **{(s, In.CONNECT): _STAY for s in ACTIVE},  # idempotent
    **{(s, In.DISCONNECT): Move(S.DISCONNECTED, (StopClient,)) for s in _ALL - {S.DISCONNECTED}},
    (S.DISCONNECTED, In.DISCONNECT): _STAY,
    (S.FAILED, In.RESET_RECONNECT): Move(S.CONNECTING, (StartClient,)),
    **{(s, In.RESET_RECONNECT): _STAY for s in _ALL - {S.FAILED}},  # the counter is reset
    (S.ERROR, In.RETRY_DUE): Move(S.CONNECTING, (StartClient,)),
    (S.CONNECTING, In.QR): Move(S.QR_READY),
    (S.QR_READY, In.QR): _STAY,  # a fresh code
    **{(s, In.PAIRED): _STAY for s in ACTIVE},
    (S.CONNECTING, In.CONNECTED): Move(S.CONNECTED),
    (S.QR_READY, In.CONNECTED): Move(S.CONNECTED),
    (S.CONNECTED, In.CONNECTED): _STAY,
    **{(s, In.CONNECTION_LOST): Move(S.ERROR, (StopClient, RetryAfter)) for s in ACTIVE},
    **{(s, In.GIVE_UP): Move(S.FAILED, (StopClient,)) for s in ACTIVE},
    **{(s, In.LOGGED_OUT): Move(S.DISCONNECTED, (StopClient, ForgetCredentials)) for s in ACTIVE},
    **{(s, In.STOPPED): Move(S.DISCONNECTED, (StopClient,)) for s in ACTIVE},
    **{(s, In.REPLACED): Move(S.DISCONNECTED, (StopClient, DisableAutoconnect)) for s in ACTIVE},
}
# Engine events once no client runs come from one already stopped: expected, and ignored.
STALE = frozenset((s, e) for s in _ALL - ACTIVE for e in _ENGINE_EVENTS)


@attrs.frozen
class ReconnectPolicy:
    """Exponential backoff: initial, initial*factor, ... capped at max_delay; max_attempts in a row."""

    initial_delay: float = 3.0
    factor: float = 2.0
    max_delay: float = 30.0
    max_attempts: int = 5

    def delay(self, attempt: int) -> float:
        """Delay before reconnect attempt number `attempt` (1-based)."""
        return min(self.initial_delay * self.factor ** (attempt - 1), self.max_delay)


@attrs.define
class SessionMachine:
    policy: ReconnectPolicy = ReconnectPolicy()
    state: State = State.DISCONNECTED
    reconnect_attempts: int = 0
    last_error: str | None = None
    phone_number: str | None = None
    qr_code: str | None = None
    # Bumped on every state change so observers (the supervisor) can timestamp it.
    version: int = 0

    # -- commands ---------------------------------------------------------------------------

    def connect(self) -> list[Effect]:
        if self.state not in ACTIVE:
            self.reconnect_attempts = 0
        return self._move(In.CONNECT)

    def disconnect(self, reason: str | None = None) -> list[Effect]:
        if self.state is not State.DISCONNECTED:
            self.qr_code = None
            self.last_error = reason
        return self._move(In.DISCONNECT)

    def reset_reconnect(self) -> list[Effect]:
        self.reconnect_attempts = 0
        return self._move(In.RESET_RECONNECT)

    def retry_due(self) -> list[Effect]:
        return self._move(In.RETRY_DUE)

    # -- engine events ----------------------------------------------------------------------

    def qr(self, code: str) -> list[Effect]:
        if self._is_stale(In.QR):
            return []
        effects = self._move(In.QR)
        self.qr_code = code
        self.reconnect_attempts = 0  # WhatsApp answered: the network is fine
        return effects

    def paired(self, phone_number: str) -> list[Effect]:
        if self._is_stale(In.PAIRED):
            return []
        self.phone_number = phone_number or self.phone_number
        return self._move(In.PAIRED)

    def connected(self, phone_number: str | None) -> list[Effect]:
        if self._is_stale(In.CONNECTED):
            return []
        effects = self._move(In.CONNECTED)
        self.phone_number = phone_number or self.phone_number
        self.qr_code = None
        self.reconnect_attempts = 0
        self.last_error = None
        return effects

    def connection_lost(self, reason: str) -> list[Effect]:
        """An unexpected disconnect or a failed connection attempt: back off and retry."""
        give_up = self.reconnect_attempts >= self.policy.max_attempts
        what = In.GIVE_UP if give_up else In.CONNECTION_LOST
        if self._is_stale(what):
            return []
        self.qr_code = None
        if give_up:
            self.last_error = f"{reason} (gave up after {self.reconnect_attempts} reconnect attempts)"
        else:
            self.reconnect_attempts += 1
            self.last_error = reason
        return self._move(what)

    def logged_out(self, reason: str) -> list[Effect]:
        """The phone removed this device: its credentials are void, so never retry with them."""
        if self._is_stale(In.LOGGED_OUT):
            return []
        self.phone_number = None
        self._down(reason)
        return self._move(In.LOGGED_OUT)

    def stopped(self, reason: str) -> list[Effect]:
        """WhatsApp ended the connection in a way that retrying cannot fix (QR expired, ban)."""
        if self._is_stale(In.STOPPED):
            return []
        self._down(reason)
        return self._move(In.STOPPED)

    def replaced(self, reason: str) -> list[Effect]:
        """Another client took the account: stay down (across restarts too) until /connect."""
        if self._is_stale(In.REPLACED):
            return []
        self._down(f"{reason}; stays disconnected until POST /connect")
        return self._move(In.REPLACED)

    # -- the table --------------------------------------------------------------------------

    def _is_stale(self, what: Input) -> bool:
        return (self.state, what) in STALE

    def _down(self, reason: str) -> None:
        self.qr_code = None
        self.reconnect_attempts = 0
        self.last_error = reason

    def _move(self, what: Input) -> list[Effect]:
        move = TRANSITIONS.get((self.state, what))
        if move is None:
            if (self.state, what) in STALE:
                return []
            raise IllegalTransition(self.state, what)
        if move.to is not None and move.to is not self.state:
            self.state = move.to
            self.version += 1
        return [self._effect(kind) for kind in move.effects]

    def _effect(self, kind: type[Effect]) -> Effect:
        if kind is RetryAfter:
            return RetryAfter(self.policy.delay(self.reconnect_attempts))
        if kind is DisableAutoconnect:
            return DisableAutoconnect(self.last_error or "")
        return kind()
