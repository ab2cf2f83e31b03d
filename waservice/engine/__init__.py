"""WhatsApp engines: `neonize` (the real one, whatsmeow) and `fake` (scripted, for tests)."""

from __future__ import annotations

from .base import (
    Client,
    Connected,
    ConnectionLost,
    Engine,
    EngineError,
    EngineEvent,
    EventSender,
    LoggedOut,
    Paired,
    QrCode,
    Replaced,
    SentMessage,
    Stopped,
)

__all__ = [
    "Client",
    "Connected",
    "ConnectionLost",
    "Engine",
    "EngineError",
    "EngineEvent",
    "EventSender",
    "LoggedOut",
    "Paired",
    "QrCode",
    "Replaced",
    "SentMessage",
    "Stopped",
    "create_engine",
]


def create_engine(name: str) -> Engine:
    if name == "fake":
        from .fake import FakeEngine

        return FakeEngine()
    from .neonize import NeonizeEngine  # imports the Go library: only when asked for

    return NeonizeEngine()
