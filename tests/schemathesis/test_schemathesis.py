"""Schemathesis against the service's own OpenAPI document, on the fake engine and on the real
engine against the WhatsApp simulator: no 5xx, answers match their documented status, content type
and schema. Bounded in time (WASERVICE_SCHEMATHESIS_SECONDS per run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.process.service import ServiceProcess
from tests.wasim import Simulator
from tests.wasim.tls import tls_env

pytestmark = [pytest.mark.slow, pytest.mark.trio]

CONFIG = Path(__file__).with_name("schemathesis.toml")
SECONDS = int(os.environ.get("WASERVICE_SCHEMATHESIS_SECONDS", "30"))
# Listed in schemathesis.toml's dictionary of session ids: connected, so valid sends succeed.
CONNECTED = ("default", "s1", "s2", "s3", "sender")
SHOWING_QR = "qr1"


async def run_schemathesis(url: str, workdir: Path) -> None:
    args = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run"]
    args += [f"{url}/openapi.json", "--max-time", str(SECONDS), "--no-color"]
    args += ["--report", "ndjson", "--report-dir", str(workdir / "report")]
    # Its own process and loop: the service under test keeps answering while hypothesis thinks.
    result = await trio.run_process(
        args, cwd=workdir, capture_stdout=True, stderr=subprocess.STDOUT, check=False
    )
    output = result.stdout.decode(errors="replace")
    print(output[output.find("=== WARNINGS") if "=== WARNINGS" in output else -1500 :])  # shown with -rA
    assert result.returncode == 0, output[-6000:]
    assert " failed" not in output.splitlines()[-1] and " error" not in output.splitlines()[-1], output[
        -3000:
    ]


async def test_fake_engine(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path / "data", env={"WASERVICE_ENGINE": "fake"})
    await trio.to_thread.run_sync(service.start)
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            for session_id in (*CONNECTED, SHOWING_QR):
                assert (await http.post("/connect", json={"session_id": session_id})).status_code == 200
            for session_id in CONNECTED:
                await _wait_state(http, session_id, "qr_ready")
                scan = {"session_id": session_id, "phone": "573001234567"}
                assert (await http.post("/_fake/scan", json=scan)).status_code == 200
        await run_schemathesis(service.url, tmp_path)
    finally:
        code = await trio.to_thread.run_sync(service.stop)
    assert code == 0, service.log()[-3000:]
    assert "Traceback" not in service.log(), service.log()[-6000:]


@pytest.mark.simulator
async def test_real_engine_on_the_simulator(sim: Simulator, patched_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[reconnect]\ninitial_delay = 0.4\nmax_delay = 2.0\n")
    # The simulator's media host has its own CA: uploads fail (502) unless Go trusts it at start.
    service = ServiceProcess(tmp_path / "data", env=tls_env(), config=config, pythonpath=patched_dir)
    await trio.to_thread.run_sync(service.start)
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            for n, session_id in enumerate(CONNECTED):
                assert (await http.post("/connect", json={"session_id": session_id})).status_code == 200
                await _wait_state(http, session_id, "qr_ready")
                code = (await http.get("/qr", params={"session_id": session_id})).json()["code"]
                sim.scan_qr(code, f"1555000{n:04d}")
                await _wait_state(http, session_id, "connected")
            assert (await http.post("/connect", json={"session_id": SHOWING_QR})).status_code == 200
        await run_schemathesis(service.url, tmp_path)
    finally:
        code = await trio.to_thread.run_sync(service.stop)
    assert code == 0, service.log()[-3000:]
    assert "Traceback" not in service.log(), service.log()[-6000:]


async def _wait_state(http: httpx.AsyncClient, session_id: str, state: str) -> None:
    with trio.fail_after(30):
        while (await http.get("/status", params={"session_id": session_id})).json()["state"] != state:
            await trio.sleep(0.05)
