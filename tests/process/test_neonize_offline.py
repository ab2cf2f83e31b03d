"""The real neonize engine with no WhatsApp to reach: it must fail, back off and stop cleanly.

The engine runs on the patched neonize copy, so it dials the simulator's port, leased for this run
with nothing listening on it here: every attempt is refused, whether or not the machine has internet.
"""

from __future__ import annotations

import time

import httpx

from .service import ServiceProcess


def test_real_engine_backs_off_and_stops(tmp_path, patched_dir):
    config = tmp_path / "fast.toml"
    config.write_text("[reconnect]\ninitial_delay = 0.2\nmax_delay = 0.8\nmax_attempts = 3\n")
    service = ServiceProcess(tmp_path / "data", config=config, pythonpath=patched_dir).start()
    try:
        response = httpx.post(service.url + "/connect", json={"session_id": "real"})
        assert response.status_code == 200
        seen = set()
        deadline = time.monotonic() + 30
        status = {}
        while time.monotonic() < deadline:
            status = httpx.get(service.url + "/status", params={"session_id": "real"}).json()
            seen.add(status["state"])
            if status["state"] == "failed":
                break
            time.sleep(0.05)
        assert status["state"] == "failed", (status, service.log())
        assert "error" in seen
        assert status["reconnect_attempts"] == 3
        assert status["last_error"] and "gave up after 3" in status["last_error"]
        send = httpx.post(
            service.url + "/send", json={"session_id": "real", "number": "12025550143", "message": "x"}
        )
        assert send.status_code == 400 and "failed" in send.json()["error"]
        assert httpx.post(service.url + "/reset-reconnect", json={"session_id": "real"}).status_code == 200
    finally:
        code = service.stop()
    assert code == 0, service.log()
    assert (tmp_path / "data" / "real" / "whatsmeow.db").exists()
