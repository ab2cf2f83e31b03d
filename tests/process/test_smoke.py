"""The real `waservice` process: start, answer, stop cleanly on SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from .service import ServiceProcess


def test_process_serves_and_exits_cleanly(tmp_path):
    service = ServiceProcess(tmp_path / "data", env={"WASERVICE_ENGINE": "fake"}).start()
    try:
        assert httpx.get(service.url + "/health").json() == {"status": "ok"}
        sessions = httpx.get(service.url + "/sessions").json()
        assert [s["session_id"] for s in sessions["sessions"]] == ["default"]
        docs = httpx.get(service.url + "/api-docs")
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        assert httpx.get(service.url + "/api-docs/assets/swagger-ui-bundle.js").status_code == 200
        assert httpx.get(service.url + "/").status_code == 200
    finally:
        code = service.stop()
    assert code == 0, service.log()
    assert "stopped" in service.log()


def test_bad_config_is_a_message_not_a_traceback(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nprot = 3002\n")
    result = subprocess.run(
        [sys.executable, "-m", "waservice", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "prot" in result.stderr and "Traceback" not in result.stderr


def test_public_host_without_key_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "waservice"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"WASERVICE_HOST": "0.0.0.0", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2 and "without an API key" in result.stderr


def test_port_in_use_is_a_message(tmp_path):
    with ServiceProcess(tmp_path / "a", env={"WASERVICE_ENGINE": "fake"}) as first:
        result = subprocess.run(
            [sys.executable, "-m", "waservice"],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                "PORT": str(first.port),
                "WASERVICE_ENGINE": "fake",
                "WASERVICE_DATA_DIR": str(tmp_path / "b"),
            },
        )
    assert result.returncode == 1, result.stderr
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr


def test_json_logs_one_object_per_line(tmp_path):
    env = {"WASERVICE_ENGINE": "fake", "WASERVICE_LOG_FORMAT": "json", "WASERVICE_API_KEY": "k-9f2c41"}
    service = ServiceProcess(tmp_path / "data", env=env).start()
    try:
        response = httpx.post(
            service.url + "/connect", json={"session_id": "j"}, headers={"X-API-Key": "k-9f2c41"}
        )
        assert response.status_code == 200
        assert httpx.get(service.url + "/sessions").status_code == 401
    finally:
        assert service.stop() == 0
    lines = [json.loads(line) for line in service.log().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any("session=j state=" in line["message"] for line in lines)
    assert "k-9f2c41" not in service.log()  # the key never reaches the logs
