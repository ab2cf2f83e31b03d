"""Every route's success and error paths through the app, on the fake engine."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest

from tests.unit.calls import call, wait_state
from waservice.api.app import create_app
from waservice.api.routes import iso_seconds


async def test_health(client):
    assert await call(client, "get", "/health") == (200, {"status": "ok"})


async def test_default_session_exists(client):
    status, body = await call(client, "get", "/sessions")
    assert status == 200 and body["success"] is True
    (default,) = body["sessions"]
    assert default["session_id"] == "default" and default["state"] == "disconnected"
    fields = {"session_id", "state", "phone_number", "has_qr", "reconnect_attempts", "last_error"}
    assert set(default) == {*fields, "state_changed_at", "queue_depth", "node"}
    assert default["queue_depth"] == 0
    changed = datetime.strptime(default["state_changed_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(changed.timestamp() - time.time()) < 60


def test_timestamps_are_utc_to_the_second() -> None:
    assert iso_seconds(0) == "1970-01-01T00:00:00Z"
    assert iso_seconds(1796615274.99) == "2026-12-07T03:47:54Z"  # cut, not rounded, as before
    assert iso_seconds(1796615274.01) == iso_seconds(1796615274.99)  # one cached string per second
    assert iso_seconds(-0.5) == "1969-12-31T23:59:59Z"


async def test_full_flow(client, engine):
    status, body = await call(client, "post", "/connect", json={"session_id": "session1"})
    assert status == 200
    assert body == {
        "success": True,
        "session_id": "session1",
        "message": "Connection initiated. Scan the QR code to authenticate.",
    }
    await wait_state(client, "session1", "qr_ready")
    status, body = await call(client, "get", "/qr?session_id=session1")
    assert status == 200 and body["code"] == "fake-qr:session1:1"
    assert body["qr"].startswith("data:image/png;base64,")
    assert base64.b64decode(body["qr"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"

    engine.clients["session1"].scan("573001234567")
    body = await wait_state(client, "session1", "connected")
    assert body["phone_number"] == "573001234567" and body["has_qr"] is False
    assert (await call(client, "get", "/qr?session_id=session1"))[0] == 404

    status, body = await call(
        client,
        "post",
        "/send",
        json={"session_id": "session1", "number": "+57 300-123-4567", "message": "Hello"},
    )
    assert status == 200 and body["message"] == "Message sent successfully"
    assert body["result"]["id"].startswith("FAKE") and body["result"]["to"] == "573001234567"
    assert engine.clients["session1"].sent[-1].text == "Hello"

    status, body = await call(client, "post", "/disconnect", json={"session_id": "session1"})
    assert (status, body["message"]) == (200, "WhatsApp disconnected successfully")
    status, body = await call(
        client, "post", "/send", json={"session_id": "session1", "number": "12025550143", "message": "x"}
    )
    assert status == 400 and "not connected (state: disconnected)" in body["error"]

    status, body = await call(client, "post", "/reset-reconnect", json={"session_id": "session1"})
    assert (status, body["message"]) == (200, "Reconnection attempts counter reset successfully")

    assert await call(client, "delete", "/sessions/session1") == (
        200,
        {"success": True, "message": "Session deleted successfully", "unlinked": True, "warning": None},
    )
    status, body = await call(client, "get", "/status?session_id=session1")
    assert status == 400 and "not found" in body["error"]


async def test_defaults_to_default_session(client):
    status, body = await call(client, "post", "/connect")
    assert (status, body["session_id"]) == (200, "default")
    status, body = await call(client, "get", "/status")
    assert body["session_id"] == "default"
    assert (await call(client, "post", "/connect", json={"session_id": None}))[1]["session_id"] == "default"


async def test_delete_default_refused(client):
    status, body = await call(client, "delete", "/sessions/default")
    assert status == 400 and body == {"success": False, "error": "the 'default' session cannot be deleted"}


async def test_no_qr_is_404(client):
    status, body = await call(client, "get", "/qr")
    assert status == 404 and body["success"] is False and "no QR code" in body["error"]


@pytest.mark.parametrize("bad", ["../x", "a" * 65, "", "a b", "ü", "a/b", "a.b", "..", "%2e%2e"])
async def test_hostile_session_ids(client, bad, tmp_path):
    for method, path, kwargs in [
        ("post", "/connect", {"json": {"session_id": bad}}),
        ("post", "/disconnect", {"json": {"session_id": bad}}),
        ("post", "/reset-reconnect", {"json": {"session_id": bad}}),
        ("post", "/send", {"json": {"session_id": bad, "number": "12025550143", "message": "x"}}),
    ]:
        status, body = await call(client, method, path, **kwargs)
        assert status == 400 and body["success"] is False, (path, bad, body)
        assert "session_id" in body["error"]
    status, body = await call(client, "get", "/status", query_string={"session_id": bad})
    assert status == 400 and "session_id" in body["error"]
    assert not any(p.name not in {"default", "waservice.db", "waservice.db-wal", "waservice.db-shm"}
                   for p in (tmp_path / "data").iterdir())  # fmt: skip


async def test_64_char_id_is_fine(client):
    assert (await call(client, "post", "/connect", json={"session_id": "A_b-9" * 12 + "abcd"}))[0] == 200


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"data": b"{bad", "headers": {"content-type": "application/json"}}, "not valid JSON"),
        ({"json": [1, 2]}, "JSON object"),
        ({"json": {"session_id": 5}}, "session_id"),
    ],
)
async def test_malformed_bodies(client, kwargs, fragment):
    status, body = await call(client, "post", "/connect", **kwargs)
    assert status == 400 and body["success"] is False and fragment in body["error"]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"message": "hi"}, "number"),
        ({"number": "12025550143"}, "message"),
        ({"number": 15550001111, "message": "hi"}, "number"),
        ({"number": "abc", "message": "hi"}, "number"),
        ({"number": "123", "message": "hi"}, "number"),
        ({"number": "1234567890123456", "message": "hi"}, "number"),
        ({"number": "0123456789", "message": "hi"}, "number"),
        ({"number": "9991234567", "message": "hi"}, "number"),  # no such country code
        ({"number": "1555123", "message": "hi"}, "number"),  # too short for +1
        ({"number": "12025550143", "message": "   "}, "empty"),
        ({"number": "12025550143", "message": ["x"]}, "message"),
        ({"number": "12025550143", "message": "x" * 70000}, "too long"),
    ],
)
async def test_send_validation(client, payload, fragment):
    status, body = await call(client, "post", "/send", json=payload)
    assert status == 400 and body["success"] is False and fragment in body["error"], body


async def test_send_to_disconnected_session(client):
    status, body = await call(client, "post", "/send", json={"number": "12025550143", "message": "hi"})
    assert status == 400 and "not connected (state: disconnected)" in body["error"]


async def test_send_failure_is_reported(client, engine):
    await call(client, "post", "/connect", json={"session_id": "s"})
    await wait_state(client, "s", "qr_ready")
    engine.clients["s"].scan("1555")
    await wait_state(client, "s", "connected")
    engine.fail_sends = True
    status, body = await call(
        client, "post", "/send", json={"session_id": "s", "number": "12025550143", "message": "x"}
    )
    assert status == 502 and body["success"] is False and "not sent" in body["error"]


async def test_unknown_route_and_method(client):
    status, body = await call(client, "get", "/nope")
    assert status == 404 and body["success"] is False
    status, body = await call(client, "get", "/send")
    assert status == 405 and body["success"] is False


async def test_body_too_large(client):
    status, body = await call(client, "post", "/send", data=b"x" * (2 * 1024 * 1024))
    assert status == 413 and body["success"] is False


async def test_api_key(manager):
    client = create_app(manager, api_key="s3cret").test_client()
    assert (await call(client, "get", "/health"))[0] == 200
    status, body = await call(client, "get", "/sessions")
    assert status == 401 and body["success"] is False
    assert (await call(client, "get", "/sessions", headers={"X-API-Key": "wrong"}))[0] == 401
    assert (await call(client, "get", "/sessions", headers={"X-API-Key": "s3cret"}))[0] == 200
    assert (await call(client, "get", "/sessions", headers={"Authorization": "Bearer s3cret"}))[0] == 200
    assert (await call(client, "post", "/connect", json={}))[0] == 401
    assert (await call(client, "delete", "/sessions/x"))[0] == 401
    # The page and the docs hold no data and must load so they can ask for the key.
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/api-docs")).status_code == 200


async def test_openapi_lists_every_seed_route(client):
    status, doc = await call(client, "get", "/openapi.json")
    assert status == 200
    expected = {
        ("/sessions", "get"), ("/sessions/{session_id}", "delete"), ("/connect", "post"), ("/qr", "get"),
        ("/status", "get"), ("/disconnect", "post"), ("/reset-reconnect", "post"), ("/send", "post"),
        ("/health", "get"),
    }  # fmt: skip
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert expected <= documented
    assert not [p for p in doc["paths"] if p.startswith(("/_fake", "/static", "/api-docs"))]
    send = doc["paths"]["/send"]["post"]
    assert {"200", "400", "401"} <= set(send["responses"])
    refs = {"SendResult", "SessionView"}
    assert refs <= set(doc["components"]["schemas"])


async def test_swagger_ui_is_served_locally(client):
    response = await client.get("/api-docs")
    page = await response.get_data(as_text=True)
    assert response.status_code == 200 and "swagger-ui" in page
    assert "cdn" not in page.lower() and "https://" not in page
    for asset in ("/api-docs/assets/swagger-ui-bundle.js", "/api-docs/assets/swagger-ui.css"):
        assert asset.removeprefix("/") in page  # relative: works behind a path prefix
        assert (await client.get(asset)).status_code == 200
