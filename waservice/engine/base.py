"""The narrow interface between a session supervisor and "a WhatsApp client"."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import attrs
import trio

from .content import Attachment, Content, Downloaded, NumberCheck, TypingState

# -- events a client reports, on a bounded trio memory channel the supervisor reads -------------


@attrs.frozen
class QrCode:
    code: str  # exactly what the phone must scan


@attrs.frozen
class Paired:
    phone_number: str


@attrs.frozen
class Connected:
    phone_number: str | None


@attrs.frozen
class ConnectionLost:
    """Unexpected: the network, a stream error, a dial failure. Worth retrying."""

    reason: str


@attrs.frozen
class LoggedOut:
    """The phone removed this device; its credentials are gone."""

    reason: str


@attrs.frozen
class Stopped:
    """WhatsApp ended the connection for a reason retrying cannot fix (QR expired, ban, outdated)."""

    reason: str


@attrs.frozen
class Replaced:
    """Another client opened this account with the same keys: stay down, across restarts too."""

    reason: str


EngineEvent = QrCode | Paired | Connected | ConnectionLost | LoggedOut | Stopped | Replaced
# The supervisor owns the receiving end and its loop. Engines `await events.send(...)`: the channel is
# bounded, so a flood (e.g. a history sync) slows the engine down instead of growing memory.
# Activity (incoming messages, receipts, typing...) never reaches the machine: engines send it to the
# ActivitySink given to open_engine (events/model.py).
EventSender = trio.MemorySendChannel[EngineEvent]


@attrs.frozen
class SentMessage:
    id: str
    timestamp: int  # unix seconds, as WhatsApp acknowledged it
    to: str


class EngineError(Exception):
    """The engine could not do what was asked; the message is safe to show to a user."""


class OutcomeUnknown(EngineError):
    """The request reached the engine, which ended before answering: it may have taken effect."""


# -- the interface ------------------------------------------------------------------------------


class Client(Protocol):
    """One WhatsApp device, kept for the life of its session (never two per session)."""

    async def run(self, events: EventSender) -> None:
        """Connect, then stay connected until cancelled, reporting events on `events`.

        Returning (or raising EngineError) means the connection ended by itself; the
        supervisor treats it as ConnectionLost unless an event already said otherwise.
        On cancellation the client disconnects cleanly (credentials saved) before returning.
        """
        ...

    async def send(self, chat: str, content: Content) -> SentMessage:
        """Send `content` to `chat` (a JID string). Raises EngineError.

        Cancellable at any moment: the caller's deadline is real. If WhatsApp acknowledges the
        message after the caller gave up, the engine logs the late ack with the message id.
        `SentMessage.to` is `chat`; the caller replaces it with what its user asked for.
        """
        ...

    async def check_numbers(self, numbers: list[str]) -> list[NumberCheck]:
        """Which of these numbers (digits with country code) are on WhatsApp; one answer each."""
        ...

    async def pair_code(self, phone: str) -> str:
        """While the device shows a QR code: a code ("ABCD-EFGH") to type on the phone `phone`
        instead of scanning. Raises EngineError when no QR is showing."""
        ...

    async def mark_read(self, chat: str, sender: str, message_ids: list[str]) -> None:
        """Tell `sender` (the author, a JID) that these messages in `chat` were read."""
        ...

    async def set_typing(self, chat: str, state: TypingState) -> None:
        """Show (or stop showing) typing or recording in `chat`."""
        ...

    async def download(self, attachment: Attachment, path: str) -> Downloaded:
        """Download and decrypt a received message's media into the file `path`."""
        ...

    async def logout(self) -> None:
        """Unlink this device from the phone, if connected."""
        ...

    async def close(self) -> None:
        """Release everything; the client is not used again."""
        ...


class Engine(Protocol):
    """Opened with `open_engine(...)` (an async context manager that owns any worker processes)."""

    name: str

    def client(self, session_id: str, directory: Path) -> Client: ...

    async def has_credentials(self, session_id: str, directory: Path) -> bool:
        """Whether the session's device (in `directory`, or in the shared device store) is paired
        (can log in without a QR).

        Never blocks the trio thread (file and database access go to worker threads)."""
        ...

    async def forget_credentials(self, session_id: str, directory: Path) -> None:
        """Remove a device's stored credentials (after a logout or on delete); raises OSError."""
        ...
