"""The real process with the fake engine: shutdown is bounded, a corrupt registry stops start-up."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from waservice.engine.fake import DEVICE_FILE
from waservice.store.registry import Registry

from .service import ServiceProcess, free_port

SESSIONS = 1000
GRACE = 3.0


def paired_sessions(data: Path, count: int) -> list[str]:
    """A data directory as a previous run left it: `count` paired sessions that autoconnect."""
    data.mkdir(parents=True)
    registry = Registry(data / "waservice.db")
    ids = [f"s{n:05d}" for n in range(count)]
    for sid in ids:
        (data / sid).mkdir()
        (data / sid / DEVICE_FILE).write_text(json.dumps({"phone": "1555" + sid[1:]}))
        registry.add(sid, autoconnect=True)
    registry.close()
    return ids


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("key", [None, "stalled-1"], ids=["plain", "idempotency-key"])
def test_sigterm_with_1000_sessions_and_a_stalled_send_exits_within_the_grace(
    tmp_path: Path, key: str | None
):
    """A keyed send finishes once handed over even if its client leaves; not past the shutdown."""
    data = tmp_path / "data"
    ids = paired_sessions(data, SESSIONS)
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nshutdown_grace = {GRACE}\n[sessions]\nengine = "fake"\n')
    service = ServiceProcess(data, config=config).start(timeout=120)
    try:

        def connected() -> int:
            sessions = httpx.get(service.url + "/sessions", timeout=30).json()["sessions"]
            return sum(s["state"] == "connected" for s in sessions)

        wait_until(lambda: connected() == SESSIONS, 120, f"{SESSIONS} sessions to connect")
        httpx.post(service.url + "/_fake/ack-delay", json={"seconds": 1000}).raise_for_status()
        send = {"session_id": ids[0], "number": "12025550143", "message": "stalls"}

        def send_and_wait() -> None:
            with contextlib.suppress(httpx.HTTPError):  # cut off by the shutdown: that is the point
                headers = {"Idempotency-Key": key} if key else {}
                httpx.post(service.url + "/send", json=send, headers=headers, timeout=300)

        stalled = threading.Thread(target=send_and_wait, daemon=True)
        stalled.start()
        wait_until(
            lambda: httpx.get(service.url + f"/_fake/sent?session_id={ids[0]}").json()["pending"] == 1,
            30,
            "the send to be in flight",
        )
    except BaseException:
        service.stop()
        raise
    t0 = time.monotonic()
    code = service.stop(timeout=120)
    elapsed = time.monotonic() - t0
    log = service.log()
    assert code == 0, log
    assert elapsed <= GRACE + 5, f"shutdown took {elapsed:.1f} s\n{log[-3000:]}"
    assert f"stopping {SESSIONS + 1} session(s)" in log and "stopped" in log
    print(f"shutdown with {SESSIONS} sessions and a stalled send: {elapsed:.2f} s (grace {GRACE} s)")


def test_corrupt_registry_is_a_message_and_an_exit_code(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "waservice.db").write_bytes(b"garbage, not SQLite" * 200)
    result = subprocess.run(
        [sys.executable, "-m", "waservice"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "WASERVICE_ENGINE": "fake",
            "WASERVICE_DATA_DIR": str(data),
            "PORT": str(free_port()),
        },
    )
    assert result.returncode == 65, result.stderr
    assert "not a readable session registry" in result.stderr and "Move it aside" in result.stderr
    assert "Traceback" not in result.stderr
