"""Shared fixtures: a session manager on the fake engine, the app's test client, and the simulator's
port with the patched neonize copy that dials it (leased once per test run)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from tests.wasim.patch import PatchedNeonize, lease_patched_neonize
from waservice.api.app import create_app
from waservice.engine.fake import FakeEngine
from waservice.events.hub import EventHub
from waservice.events.recorder import EventRecorder
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager
from waservice.store import EventStore, SessionStore, open_event_store, open_store
from waservice.store.messages import MessageIndex


@pytest.fixture(scope="session")
def wasim_neonize() -> Iterator[PatchedNeonize]:
    """A free port, held for the whole run, and a neonize copy whose library dials it.

    ``WASIM_PORT`` pins the port instead (an error while another run holds it).
    """
    pinned = os.environ.get("WASIM_PORT")
    with lease_patched_neonize(port=int(pinned) if pinned else None) as patched:
        yield patched


@pytest.fixture(scope="session")
def sim_port(wasim_neonize: PatchedNeonize) -> int:
    return wasim_neonize.port


@pytest.fixture(scope="session")
def patched_dir(wasim_neonize: PatchedNeonize) -> Path:
    """Directory to put first on PYTHONPATH of a process that imports neonize (never pytest's own)."""
    return wasim_neonize.path


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SessionStore]:
    async with open_store(tmp_path / "data") as store:
        yield store


@pytest.fixture
async def event_store(store: SessionStore) -> AsyncIterator[EventStore]:
    async with open_event_store(store.data_dir) as events:
        yield events


@pytest.fixture
async def message_index(event_store: EventStore) -> MessageIndex:
    """The message index beside the log (before the recorder: it indexes every logged message)."""
    return await MessageIndex.open(event_store)


@pytest.fixture
async def recorder(
    event_store: EventStore, message_index: MessageIndex, nursery: trio.Nursery
) -> EventRecorder:
    """The log writer, running: `recorder.sink` and `recorder.record` log, `recorder.hub` follows."""
    recorder = EventRecorder(event_store, EventHub(await event_store.last_id()))
    await nursery.start(recorder.run)
    return recorder


@pytest.fixture
async def manager(
    engine: FakeEngine, store: SessionStore, recorder: EventRecorder, nursery: trio.Nursery
) -> SessionManager:
    return await nursery.start(SessionManager(engine, store, ReconnectPolicy(), record=recorder.record).run)


@pytest.fixture
def app(manager: SessionManager, message_index: MessageIndex):
    return create_app(manager, messages=message_index)


@pytest.fixture
def client(app):
    return app.test_client()
