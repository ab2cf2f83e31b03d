"""Shared fixtures: a session manager on the fake engine, and the app's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from waservice.api.app import create_app
from waservice.engine.fake import FakeEngine
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager
from waservice.store import SessionStore


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def manager(engine: FakeEngine, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[SessionManager]:
    store = SessionStore(tmp_path / "data")
    manager = await nursery.start(SessionManager(engine, store, ReconnectPolicy()).run)
    yield manager
    store.close()


@pytest.fixture
def app(manager: SessionManager):
    return create_app(manager)


@pytest.fixture
def client(app):
    return app.test_client()
