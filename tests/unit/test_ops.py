"""GET /metrics and GET /ready (issue 11 items 1 and 2), and the security headers (item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.calls import call, wait_state
from waservice.api.app import SECURITY_HEADERS, create_app
from waservice.config import MetricsConfig
from waservice.engine.fake import FakeEngine
from waservice.engine.pool import WorkerStats
from waservice.metrics import reason_class, restart_cause
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager
from waservice.store import SessionStore

KEY = "admin-key-0123456789"


async def scrape(client, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, parsed by prometheus-client's own parser: (name, labels) -> value."""
    response = await client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=")
    text = await response.get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def connected(client, engine, session_id: str) -> None:
    await call(client, "post", "/connect", json={"session_id": session_id})
    await wait_state(client, session_id, "qr_ready")
    engine.clients[session_id].scan("573001234567")
    await wait_state(client, session_id, "connected")


# -- /metrics ---------------------------------------------------------------------------------------


async def test_metrics_count_a_scripted_connect_send_and_failure(client, engine):
    await connected(client, engine, "s1")
    send = {"session_id": "s1", "number": "12025550143", "message": "hi"}
    assert (await call(client, "post", "/send", json=send))[0] == 200
    engine.fail_sends = True
    assert (await call(client, "post", "/send", json=send))[0] == 502
    engine.clients["s1"].fail("stream error 503")
    await wait_state(client, "s1", "error")
    assert (await call(client, "post", "/send", json=send))[0] == 400  # not connected

    m = await scrape(client)
    assert m["waservice_qr_codes_total", ()] == 1
    assert m["waservice_sends_total", (("outcome", "accepted"),)] == 1
    assert m["waservice_sends_total", (("outcome", "failed"),)] == 1
    assert m["waservice_sends_total", (("outcome", "not_connected"),)] == 1
    assert m["waservice_sends_total", (("outcome", "outcome_unknown"),)] == 0
    assert m["waservice_send_seconds_count", ()] == 2  # the two that reached WhatsApp
    assert m["waservice_reconnect_attempts_total", (("reason", "stream_error"),)] == 1
    assert m["waservice_reconnect_attempts_total", (("reason", "network"),)] == 0
    changes = {k[1]: v for k, v in m.items() if k[0] == "waservice_session_state_changes_total"}
    assert changes[(("reason", "none"), ("state", "qr_ready"))] == 1
    assert changes[(("reason", "none"), ("state", "connected"))] == 1
    assert changes[(("reason", "stream_error"), ("state", "error"))] == 1
    assert m["waservice_sessions", (("state", "error"),)] == 1
    assert m["waservice_sessions", (("state", "disconnected"),)] == 1  # default
    assert m["waservice_sessions", (("state", "failed"),)] == 0
    assert m["waservice_session_state", (("session_id", "s1"), ("state", "error"))] == 1
    assert m["waservice_session_reconnect_attempts", (("session_id", "s1"),)] == 1
    assert ("process_open_fds", ()) in m


async def test_session_ids_are_labels_only_below_the_limit(manager, engine):
    client = create_app(manager, metrics=MetricsConfig(per_session_max=3)).test_client()
    await call(client, "post", "/connect", json={"session_id": "s1"})
    m = await scrape(client)  # 2 sessions with default
    assert m["waservice_session_state", (("session_id", "s1"), ("state", "qr_ready"))] == 1
    await call(client, "post", "/connect", json={"session_id": "s2"})
    m = await scrape(client)
    assert not [k for k in m if k[0].startswith("waservice_session_") and "changes" not in k[0]]
    assert m["waservice_sessions", (("state", "qr_ready"),)] == 2


async def test_metrics_need_the_admin_key_unless_public(manager):
    private = create_app(manager, api_key=KEY).test_client()
    status, body = await call(private, "get", "/metrics")
    assert status == 401 and body["success"] is False
    await scrape(private, {"X-API-Key": KEY})
    public = create_app(manager, api_key=KEY, metrics=MetricsConfig(public=True)).test_client()
    await scrape(public)


class PoolLike(FakeEngine):
    """The fake engine with the worker pool's view of its processes, set by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.workers = [WorkerStats(0, 101, "running", 2, 40, 50.0, 0, 0, None)]
        self.restart_causes = {"crashed": 2, "recycled_fds": 1}

    def stats(self) -> list[WorkerStats]:
        return self.workers


async def test_worker_metrics_and_readiness(tmp_path: Path, nursery: trio.Nursery):
    engine = PoolLike()
    async with _store(tmp_path) as store:
        manager = await nursery.start(SessionManager(engine, store, ReconnectPolicy()).run)
        client = create_app(manager).test_client()
        m = await scrape(client)
        assert m["waservice_worker_up", (("worker", "0"),)] == 1
        assert m["waservice_worker_open_fds", (("worker", "0"),)] == 40
        assert m["waservice_worker_resident_memory_bytes", (("worker", "0"),)] == 50 * 1024 * 1024
        assert m["waservice_worker_restarts_total", (("cause", "crashed"),)] == 2
        assert m["waservice_worker_restarts_total", (("cause", "recycled_fds"),)] == 1
        assert m["waservice_worker_restarts_total", (("cause", "unresponsive"),)] == 0
        assert await call(client, "get", "/ready") == (200, {"success": True, "ready": True})

        engine.workers = [WorkerStats(0, None, "restarting", 2, 0, 0.0, 0, 3, "crashed")]
        status, body = await call(client, "get", "/ready")
        assert (status, body["ready"], body["success"]) == (503, False, False)
        assert body["reasons"] == ["no engine worker is running (worker 0 restarting)"]
        assert "no engine worker is running" in body["error"]
        m = await scrape(client)
        assert m["waservice_worker_up", (("worker", "0"),)] == 0


def _store(tmp_path: Path):
    from waservice.store import open_store

    return open_store(tmp_path / "data")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (None, "none"),
        ("stream error 503", "stream_error"),
        ("connection refused (fake engine)", "network"),
        ("websocket: read timed out", "network"),
        ("logged out from the phone (device removed)", "logged_out"),
        ("connection replaced: the account was opened by another client; stays disconnected", "replaced"),
        ("QR code expired without being scanned", "qr_expired"),
        ("temporarily banned by WhatsApp (code 101, expires in 60 s)", "banned"),
        ("WhatsApp refused the connection: 405 ", "refused"),
        ("WhatsApp says this client version is outdated", "outdated"),
        ("engine worker 1 was recycled (900 open files > 532 for 4 clients)", "worker"),
        ("something new", "other"),
    ],
)
def test_reason_classes(reason, expected):
    assert reason_class(reason) == expected


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("engine worker 0 was recycled (900 open files > 532 for 4 clients)", "recycled_fds"),
        ("engine worker 0 was recycled (1100 MB resident > 1024 MB)", "recycled_rss"),
        ("engine worker 0 was recycled (17 abandoned QR-phase clients > 16)", "recycled_abandoned"),
        (
            "engine worker 0 was recycled (21 device stores of past attempts keep their database"
            " connections > 20)",
            "recycled_stores",
        ),
        ("engine worker 2 did not answer a ping in 15 s; killed", "unresponsive"),
        ("engine worker 0 could not start: not ready in 60 s", "start_failed"),
        ("engine worker 0 exited with SIGSEGV: ... too many open files", "crashed"),
    ],
)
def test_restart_causes(reason, expected):
    assert restart_cause(reason) == expected


# -- /ready during start-up ---------------------------------------------------------------------------


class SlowRestore(FakeEngine):
    """Restoring waits at the credential probe until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()

    async def has_credentials(self, session_id: str, directory: Path) -> bool:
        await self.gate.wait()
        return await super().has_credentials(session_id, directory)


async def test_ready_flips_once_the_sessions_are_restored(store: SessionStore, nursery: trio.Nursery):
    engine = SlowRestore()
    manager = SessionManager(engine, store, ReconnectPolicy())
    nursery.start_soon(manager.run)  # as server.py does: serving starts while it restores
    client = create_app(manager).test_client()

    status, body = await call(client, "get", "/ready")
    assert (status, body["reasons"]) == (503, ["restoring the stored sessions"])
    assert (await call(client, "get", "/health"))[0] == 200
    assert (await client.get("/")).status_code == 200  # the page loads, and polls until it can

    answered: list[tuple[int, dict]] = []

    async def ask_status() -> None:
        answered.append(await call(client, "get", "/status"))

    nursery.start_soon(ask_status)
    await trio.testing.wait_all_tasks_blocked()
    assert not answered  # a session route waits for the restore instead of seeing no session
    engine.gate.set()
    with trio.fail_after(10):
        await manager.restored.wait()
        while not answered:
            await trio.sleep(0.001)
    assert answered[0][0] == 200 and answered[0][1]["session_id"] == "default"
    assert await call(client, "get", "/ready") == (200, {"success": True, "ready": True})


async def test_readiness_checks_can_be_added(app, client):
    from waservice.api.ops import readiness_checks

    async def database() -> str | None:
        return "database unreachable"

    readiness_checks(app).append(database)
    status, body = await call(client, "get", "/ready")
    assert (status, body["reasons"]) == (503, ["database unreachable"])


# -- security headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "expected"),
    [
        ("get", "/", {}, 200),
        ("get", "/static/app.js", {}, 200),
        ("get", "/api-docs", {}, 200),
        ("get", "/api-docs/assets/swagger-ui-bundle.js", {}, 200),
        ("get", "/openapi.json", {}, 200),
        ("get", "/health", {}, 200),
        ("get", "/ready", {}, 200),
        ("get", "/metrics", {"headers": {"X-API-Key": KEY}}, 200),
        ("get", "/sessions", {}, 401),
        ("get", "/nowhere", {"headers": {"X-API-Key": KEY}}, 404),
        ("put", "/connect", {"headers": {"X-API-Key": KEY}}, 405),
        ("post", "/connect", {"headers": {"X-API-Key": KEY}, "data": b"x"}, 415),
        ("post", "/connect", {"headers": {"X-API-Key": KEY, "Origin": "https://evil.example"}}, 403),
        ("get", "/status?session_id=a%20b", {"headers": {"X-API-Key": KEY}}, 400),
    ],
)
async def test_security_headers_on_every_response(manager, method, path, kwargs, expected):
    client = create_app(manager, api_key=KEY).test_client()
    response = await getattr(client, method)(path, **kwargs)
    assert response.status_code == expected
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, path)
    csp = response.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in csp and "http" not in csp and "frame-ancestors 'none'" in csp


async def test_security_headers_on_an_unexpected_error(manager, monkeypatch):
    client = create_app(manager).test_client()

    def broken(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr(type(manager.sessions()[0]), "info", broken)
    response = await client.get("/status")
    assert response.status_code == 500
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("Content-Security-Policy") == SECURITY_HEADERS["Content-Security-Policy"]


async def test_the_server_answers_while_it_restores(tmp_path: Path, monkeypatch, nursery: trio.Nursery):
    """server.py serves before the restore ends, so /ready can say "restoring" (and /health works)."""
    import httpx

    from tests.process.service import free_port
    from waservice import server
    from waservice.config import load_config

    gate = trio.Event()
    probe = FakeEngine.has_credentials

    async def slow_probe(self, session_id: str, directory: Path) -> bool:
        await gate.wait()
        return await probe(self, session_id, directory)

    monkeypatch.setattr(FakeEngine, "has_credentials", slow_probe)
    monkeypatch.setattr(server, "_fix_server_libraries", lambda: None)  # process-wide: not in a test
    port = free_port()
    env = {"WASERVICE_ENGINE": "fake", "PORT": str(port), "WASERVICE_DATA_DIR": str(tmp_path / "data")}
    with trio.fail_after(20):  # serving only after the restore would never get here
        await nursery.start(server.serve_forever, load_config(None, environ=env))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        answer = await http.get("/ready")
        assert answer.status_code == 503 and answer.json()["reasons"] == ["restoring the stored sessions"]
        assert (await http.get("/health")).status_code == 200
        gate.set()
        with trio.fail_after(20):
            while (answer := await http.get("/ready")).status_code != 200:
                await trio.sleep(0.01)
        assert answer.json() == {"success": True, "ready": True}
    nursery.cancel_scope.cancel()


async def test_a_level_is_one_line_and_read_at_scrape_time(manager, client):
    """The pattern metrics.py documents for the metrics other parts add (queue depth, subscribers)."""
    queue: list[int] = []
    manager.metrics.level("waservice_example_depth", "An example queue's depth", lambda: len(queue))
    assert (await scrape(client))["waservice_example_depth", ()] == 0
    queue.extend([1, 2, 3])
    assert (await scrape(client))["waservice_example_depth", ()] == 3
