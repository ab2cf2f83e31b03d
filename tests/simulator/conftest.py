"""Fixtures for the simulator tests: one fixed port per session, a patched neonize copy, a simulator
per test and real neonize clients in subprocesses."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

_TESTS_DIR = Path(__file__).resolve().parents[1]


def _ensure_project_tests_package() -> None:
    """Make ``tests`` mean this project's tests directory.

    linkpreview (a neonize dependency) installs a top-level ``tests`` package into site-packages, and
    a regular package there beats a namespace ``tests`` directory here. With ``tests/__init__.py``
    and the project root first on ``sys.path`` (pytest's default) this is a no-op.
    """
    current = sys.modules.get("tests")
    if current is None:
        spec = importlib.util.find_spec("tests")
        if spec is not None and str(_TESTS_DIR) in list(spec.submodule_search_locations or []):
            return
    elif str(_TESTS_DIR) in list(getattr(current, "__path__", [])):
        return
    package = types.ModuleType("tests")
    package.__path__ = [str(_TESTS_DIR)]
    sys.modules["tests"] = package


_ensure_project_tests_package()

from tests.simulator.clients import RawClient  # noqa: E402
from tests.wasim import Simulator, open_simulator, patched_neonize  # noqa: E402

DEFAULT_PORT = 45678


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "simulator: end-to-end tests against the WhatsApp Web simulator")


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
