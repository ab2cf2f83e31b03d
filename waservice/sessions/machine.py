"""The session state machine: pure, no I/O, no clock.

It takes commands (from the API) and engine events (from WhatsApp) and returns the effects the
supervisor must carry out. Every way a session can change state is in this file:

    command / event        from                                  to            effects
    connect                disconnected, error, failed            connecting    StartClient
    disconnect             any but disconnected                   disconnected  StopClient
    reset_reconnect        failed                                 connecting    StartClient
    qr                     connecting, qr_ready                   qr_ready
    connected              connecting, qr_ready, connected        connected
    connection_lost        connecting, qr_ready, connected        error         StopClient, RetryAfter
                           ... after max_attempts                 failed        StopClient
    retry_due              error                                  connecting    StartClient
    logged_out             any                                    disconnected  StopClient, ForgetCredentials
    stopped (replaced, QR expired, ban, ...)                      disconnected  StopClient

Unexpected events in other states are stale (from a client already stopped) and ignored.
"""

from __future__ import annotations

import enum

import attrs

__all__ = [
    "Effect",
    "ForgetCredentials",
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


ACTIVE = frozenset({State.CONNECTING, State.QR_READY, State.CONNECTED})


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
    pass


Effect = StartClient | StopClient | RetryAfter | ForgetCredentials


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
        if self.state in ACTIVE:
            return []  # idempotent
        self.reconnect_attempts = 0
        self._enter(State.CONNECTING)
        return [StartClient()]

    def disconnect(self, reason: str | None = None) -> list[Effect]:
        if self.state is State.DISCONNECTED:
            return []
        self.qr_code = None
        self.last_error = reason
        self._enter(State.DISCONNECTED)
        return [StopClient()]

    def reset_reconnect(self) -> list[Effect]:
        self.reconnect_attempts = 0
        if self.state is State.FAILED:
            self._enter(State.CONNECTING)
            return [StartClient()]
        return []

    # -- engine events ----------------------------------------------------------------------

    def qr(self, code: str) -> list[Effect]:
        if self.state not in (State.CONNECTING, State.QR_READY):
            return []
        self.qr_code = code
        self.reconnect_attempts = 0  # WhatsApp answered: the network is fine
        if self.state is not State.QR_READY:
            self._enter(State.QR_READY)
        return []

    def paired(self, phone_number: str) -> list[Effect]:
        self.phone_number = phone_number or self.phone_number
        return []

    def connected(self, phone_number: str | None) -> list[Effect]:
        if self.state not in ACTIVE:
            return []
        self.phone_number = phone_number or self.phone_number
        self.qr_code = None
        self.reconnect_attempts = 0
        self.last_error = None
        if self.state is not State.CONNECTED:
            self._enter(State.CONNECTED)
        return []

    def connection_lost(self, reason: str) -> list[Effect]:
        """An unexpected disconnect or a failed connection attempt: back off and retry."""
        if self.state not in ACTIVE:
            return []
        self.qr_code = None
        if self.reconnect_attempts >= self.policy.max_attempts:
            self.last_error = f"{reason} (gave up after {self.reconnect_attempts} reconnect attempts)"
            self._enter(State.FAILED)
            return [StopClient()]
        self.reconnect_attempts += 1
        self.last_error = reason
        self._enter(State.ERROR)
        return [StopClient(), RetryAfter(self.policy.delay(self.reconnect_attempts))]

    def retry_due(self) -> list[Effect]:
        if self.state is not State.ERROR:
            return []
        self._enter(State.CONNECTING)
        return [StartClient()]

    def logged_out(self, reason: str) -> list[Effect]:
        """The phone removed this device: its credentials are void, so never retry with them."""
        self.phone_number = None
        self.qr_code = None
        self.reconnect_attempts = 0
        self.last_error = reason
        self._enter(State.DISCONNECTED)
        return [StopClient(), ForgetCredentials()]

    def stopped(self, reason: str) -> list[Effect]:
        """WhatsApp ended the connection in a way that retrying cannot fix (replaced, QR expired, ban)."""
        if self.state is State.DISCONNECTED:
            return []
        self.qr_code = None
        self.reconnect_attempts = 0
        self.last_error = reason
        self._enter(State.DISCONNECTED)
        return [StopClient()]

    def _enter(self, state: State) -> None:
        self.state = state
        self.version += 1
