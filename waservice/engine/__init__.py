"""WhatsApp engines: `neonize` (the real one, whatsmeow in worker processes) and `fake` (scripted)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ..config import EngineConfig, EventsConfig
from ..events.model import ActivitySink
from .base import (
    Client,
    Connected,
    ConnectionLost,
    Engine,
    EngineError,
    EngineEvent,
    EventSender,
    LoggedOut,
    OutcomeUnknown,
    Paired,
    QrCode,
    Replaced,
    SentMessage,
    Stopped,
)
from .devices import DeviceStore
from .launch import HeadStart

__all__ = [
    "Client",
    "Connected",
    "ConnectionLost",
    "Engine",
    "EngineError",
    "EngineEvent",
    "EventSender",
    "LoggedOut",
    "OutcomeUnknown",
    "Paired",
    "QrCode",
    "Replaced",
    "SentMessage",
    "Stopped",
    "open_engine",
]


@contextlib.asynccontextmanager
async def open_engine(
    kind: str,
    config: EngineConfig,
    activity: ActivitySink,
    *,
    events: EventsConfig | None = None,
    devices: DeviceStore | None = None,
    head_start: HeadStart | None = None,
) -> AsyncIterator[Engine]:
    """The engine `kind` ("neonize" or "fake"), running until the block exits.

    Connection states go to each client's supervisor; everything else that happens (messages,
    receipts, typing...) goes to `activity`, the one sink of every session, which the caller owns
    and closes. "neonize" is a pool of worker processes (pool.py); leaving the block stops them.
    This process never imports neonize: only the workers do. `devices` is where its sessions'
    devices are stored (None: a SQLite file in each session's folder); "fake" keeps its own.
    `head_start`: "neonize" workers launched already (launch.py).
    """
    if kind == "fake":
        from .fake import FakeEngine

        yield FakeEngine(activity)
        return
    if kind != "neonize":
        raise ValueError(f"unknown engine {kind!r}")
    from .pool import open_pool

    async with open_pool(config, activity, events=events, devices=devices, head_start=head_start) as pool:
        yield pool
