"""What an event is, before and after it is logged. Pure data: the engine workers import this too.

An engine (or a session supervisor) reports an `Activity`; the log writer appends it to the durable
log, which gives it its id, and only then is it delivered (webhooks, the live stream) as a `LoggedEvent`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import trio


class Activity(msgspec.Struct, frozen=True, kw_only=True):
    """Something that happened to a session, not yet logged."""

    session_id: str
    type: str  # one of TYPES
    timestamp: float  # unix seconds when it happened (WhatsApp's own time where it gives one)
    data: dict[str, Any]  # JSON-ready; its shape per type is documented in types.py
    # Logged once per (session, type, key): WhatsApp redelivers a message after a crash or a
    # reconnect, and each copy carries the same message id.
    key: str | None = None
    received: float = 0.0  # unix seconds when our process got it: receipt-to-durable is measured from here
    # A received media message: the serialized waE2E.Message, what GET /media needs to download
    # it. Kept privately (the message index); never in `data`, never delivered: its media key
    # decrypts the file.
    attachment: bytes | None = None


class LoggedEvent(msgspec.Struct, frozen=True):
    """An event in the log: the envelope every consumer sees."""

    id: int  # increases with every append; webhook-id, the SSE id and ?after= all use it
    type: str
    session_id: str
    timestamp: str  # ISO-8601 UTC with milliseconds, e.g. "2026-11-28T19:40:00.123Z"
    data: dict[str, Any]


ActivitySink = trio.MemorySendChannel[Activity]

SESSION_STATUS = "session.status"
SESSION_QR = "session.qr"
MESSAGE_RECEIVED = "message.received"
MESSAGE_ACK = "message.ack"
MESSAGE_EDITED = "message.edited"
MESSAGE_DELETED = "message.deleted"
MESSAGE_REACTION = "message.reaction"
CHAT_TYPING = "chat.typing"
PRESENCE = "presence"
CALL_RECEIVED = "call.received"
HISTORY_SYNC = "history.sync"

TYPES = (
    SESSION_STATUS,
    SESSION_QR,
    MESSAGE_RECEIVED,
    MESSAGE_ACK,
    MESSAGE_EDITED,
    MESSAGE_DELETED,
    MESSAGE_REACTION,
    CHAT_TYPING,
    PRESENCE,
    CALL_RECEIVED,
    HISTORY_SYNC,
)


def iso_utc(unix_seconds: float) -> str:
    """ISO-8601 UTC with milliseconds and a Z, the one timestamp format in every event."""
    when = dt.datetime.fromtimestamp(unix_seconds, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
