"""Two real service processes (fake engine) on the real PostgreSQL: every session answers through
either node, the non-owner forwarding to the owner the registry names."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.process.service import ServiceProcess

pytestmark = pytest.mark.cluster

KEY = "forwarding-test-key"
SESSIONS = [f"s{n}" for n in range(6)]


@pytest.fixture
def nodes(tmp_path: Path, database_url: str) -> Iterator[dict[str, ServiceProcess]]:
    started: dict[str, ServiceProcess] = {}
    try:
        for node_id in ("A", "B"):
            env = {
                "WASERVICE_ENGINE": "fake",
                "WASERVICE_DATABASE_URL": database_url,
                "WASERVICE_NODE_ID": node_id,
            }
            # Reached by the other node at its default URL, http://127.0.0.1:<port>.
            started[node_id] = ServiceProcess(tmp_path / node_id, env=env, api_key=KEY).start()
        yield started
    finally:
        for service in started.values():
            service.stop()


def _status(service: ServiceProcess, session_id: str) -> httpx.Response:
    return httpx.get(
        f"{service.url}/status", params={"session_id": session_id}, headers={"X-API-Key": KEY}, timeout=30
    )


def test_every_session_answers_through_either_node(nodes):
    a, b = nodes["A"], nodes["B"]
    for n, session_id in enumerate(SESSIONS):  # /connect through either node places it somewhere
        (a if n % 2 else b).ok("POST", "/connect", {"session_id": session_id})
    owners: dict[str, str] = {}
    deadline = time.monotonic() + 30
    for session_id in SESSIONS:
        while True:
            via_a, via_b = _status(a, session_id), _status(b, session_id)
            if via_a.status_code == via_b.status_code == 200 and via_a.json()["state"] == "qr_ready":
                break
            assert time.monotonic() < deadline, (via_a.text, via_b.text)
            time.sleep(0.05)
        owner = via_a.headers["X-Waservice-Node"]
        assert owner == via_b.headers["X-Waservice-Node"] and owner in nodes
        assert via_a.json() == via_b.json()
        owners[session_id] = owner
    assert set(owners.values()) == {"A", "B"}, owners  # placed on both: each forwards to the other

    for session_id, owner in owners.items():
        other = b if owner == "A" else a
        nodes[owner].ok("POST", "/_fake/scan", {"session_id": session_id})  # the engine is the owner's
        other.wait_state(session_id, "connected")
        status, body = other.api(
            "POST", "/send", {"session_id": session_id, "number": "14155552671", "message": "via the other"}
        )
        assert status == 200 and body["result"]["id"].startswith("FAKE"), body
        sent = httpx.get(
            f"{nodes[owner].url}/_fake/sent", params={"session_id": session_id}, headers={"X-API-Key": KEY}
        ).json()
        assert "via the other" in str(sent)
