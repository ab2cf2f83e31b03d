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
from waservice.store import SessionStore, open_store


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SessionStore]:
    async with open_store(tmp_path / "data") as store:
        yield store


@pytest.fixture
async def manager(engine: FakeEngine, store: SessionStore, nursery: trio.Nursery) -> SessionManager:
    return await nursery.start(SessionManager(engine, store, ReconnectPolicy()).run)


@pytest.fixture
def app(manager: SessionManager):
    return create_app(manager)


@pytest.fixture
def client(app):
    return app.test_client()
