"""The real `waservice` process on the real engine, for end-to-end tests against the simulator:
`start_service` (a fixture, re-exported by conftest.py) and `Api`, its HTTP API."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trio

from tests.process.service import ServiceProcess
from tests.wasim import Simulator

PHONE, PHONE2, CONTACT = "15550001111", "15550002222", "12025550143"  # CONTACT: a valid number
# Short, seed-shaped backoff: 0.4, 0.8, 1.6, 2, 2 s (ratios 1:2:4, capped), 5 attempts.
FAST_RECONNECT = "[reconnect]\ninitial_delay = 0.4\nfactor = 2.0\nmax_delay = 2.0\nmax_attempts = 5\n"
# The churn test creates 30 sessions at once, past the default limit on new sessions per client.
SERVICE_CONFIG = FAST_RECONNECT + "\n[server]\ncreate_rate = 0\n"


class Api:
    """The service's HTTP API, async (the simulator shares this thread's event loop)."""

    def __init__(self, service: ServiceProcess) -> None:
        self.service = service
        self.http = httpx.AsyncClient(base_url=service.url, timeout=30)

    async def status(self, session_id: str) -> dict:
        return (await self.http.get("/status", params={"session_id": session_id})).json()

    async def post(self, path: str, **body: object) -> httpx.Response:
        return await self.http.post(path, json=body)

    async def wait_state(self, session_id: str, state: str, timeout: float = 90) -> dict:
        # A safety net: 30 pairings at once on a loaded 2-core box have taken more than 30 s.
        status: dict = {}
        with trio.move_on_after(timeout):
            while (status := await self.status(session_id)).get("state") != state:
                await trio.sleep(0.05)
            return status
        raise AssertionError(f"{session_id} never reached {state}: {status}\n{self.service.log()[-3000:]}")

    async def qr(self, session_id: str) -> dict:
        await self.wait_state(session_id, "qr_ready")
        response = await self.http.get("/qr", params={"session_id": session_id})
        assert response.status_code == 200, response.text
        return response.json()

    async def pair(self, sim: Simulator, session_id: str, phone: str) -> None:
        assert (await self.post("/connect", session_id=session_id)).status_code == 200
        sim.scan_qr((await self.qr(session_id))["code"], phone)
        status = await self.wait_state(session_id, "connected")
        assert status["phone_number"] == phone


def left_and_came_back(log: str, session_id: str, state: str) -> bool:
    """The service's log shows ``state``, then another state, then ``state`` again."""
    states = re.findall(rf"session={re.escape(session_id)} state=(\w+)", log)
    first = states.index(state) if state in states else len(states)
    return any(s != state for s in states[first:]) and states[-1] == state


StartService = Callable[..., Awaitable[Api]]


@pytest.fixture
async def start_service(patched_dir: Path, tmp_path: Path) -> AsyncIterator[StartService]:
    """`await start_service()` runs waservice (real engine) on the simulator; stopped at the end."""
    services: list[ServiceProcess] = []
    config = tmp_path / "config.toml"
    config.write_text(SERVICE_CONFIG)

    async def start(data: str = "data", extra_config: str = "") -> Api:
        """`extra_config`: TOML sections added to the tests' configuration (e.g. `[sending]`)."""
        path = config
        if extra_config:
            path = tmp_path / f"config-{len(services)}.toml"
            path.write_text(SERVICE_CONFIG + "\n" + extra_config)
        service = ServiceProcess(tmp_path / data, config=path, pythonpath=patched_dir)
        services.append(service)
        await trio.to_thread.run_sync(service.start)
        return Api(service)

    yield start
    running = [s for s in services if s.proc is not None and s.proc.poll() is None]  # not killed by the test
    codes = [await trio.to_thread.run_sync(service.stop) for service in running]  # stop all first
    for service, code in zip(running, codes, strict=True):
        assert code == 0, service.log()[-3000:]
