"""Fixtures for the simulator tests: one fixed port per session, a patched neonize copy, a simulator
per test and real neonize clients in subprocesses."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from tests.simulator.clients import RawClient
from tests.wasim import Simulator, open_simulator, patched_neonize

DEFAULT_PORT = 45678


@pytest.fixture(scope="session")
def sim_port() -> int:
    """The simulator's port; it is compiled into the patched library, so it is fixed per session."""
    return int(os.environ.get("WASIM_PORT", DEFAULT_PORT))


@pytest.fixture(scope="session")
def patched_dir(sim_port: int) -> Path:
    """Directory to put first on a client's PYTHONPATH (a cached, patched neonize copy)."""
    cache = Path(os.environ.get("WASIM_CACHE_DIR", Path(tempfile.gettempdir()) / "wasim-cache"))
    return patched_neonize(cache, sim_port)


@pytest.fixture
async def sim(sim_port: int) -> AsyncIterator[Simulator]:
    async with open_simulator(sim_port) as simulator:
        yield simulator


StartClient = Callable[..., Awaitable[RawClient]]


@pytest.fixture
async def start_client(patched_dir: Path, tmp_path: Path) -> AsyncIterator[StartClient]:
    """``await start_client(name="a", env={...})`` spawns a neonize client on ``tmp_path/<name>.db``."""
    clients: list[RawClient] = []
    async with trio.open_nursery() as nursery:

        async def start(name: str = "client", env: dict[str, str] | None = None) -> RawClient:
            client = await RawClient.start(nursery, patched_dir, tmp_path / f"{name}.db", name, env)
            clients.append(client)
            return client

        yield start
        for client in clients:
            client.kill()
        nursery.cancel_scope.cancel()
