"""Fixtures for the simulator tests: a simulator per test and real neonize clients in subprocesses.

The simulator's port and the patched neonize copy that dials it (``sim_port``, ``patched_dir``) are
leased once per test run in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from tests.simulator.clients import RawClient
from tests.simulator.service_api import start_service  # noqa: F401 (a fixture for every test here)
from tests.wasim import Simulator, open_simulator


@pytest.fixture
async def sim(sim_port: int) -> AsyncIterator[Simulator]:
    async with open_simulator(sim_port) as simulator:
        yield simulator


StartClient = Callable[..., Awaitable[RawClient]]


@pytest.fixture
async def start_client(patched_dir: Path, tmp_path: Path) -> AsyncIterator[StartClient]:
    """``await start_client(name="a", env={...})`` spawns a process with one neonize client, connecting
    on ``tmp_path/clients/<name>/whatsmeow.db`` (the same name again reuses that device)."""
    clients: list[RawClient] = []
    async with trio.open_nursery() as nursery:

        async def start(name: str = "client", env: dict[str, str] | None = None) -> RawClient:
            client = await RawClient.start(nursery, patched_dir, tmp_path / "clients", name, env)
            clients.append(client)
            await client.connect(name)
            return client

        yield start
        for client in clients:
            client.kill()
        nursery.cancel_scope.cancel()
