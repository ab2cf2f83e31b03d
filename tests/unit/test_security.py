"""Browser-borne attacks (issue 7 item 6), tried as a browser would send them, and the error-type ->
status table."""

from __future__ import annotations

import pytest

from tests.unit.calls import call, wait_state
from waservice.api.app import create_app
from waservice.api.status import STATUS_BY_ERROR, status_for
from waservice.errors import (
    Forbidden,
    InvalidRequest,
    InvalidSessionId,
    NoQrCode,
    ProtectedSession,
    SendFailed,
    ServiceError,
    SessionNotConnected,
    Unauthorized,
    UnknownSession,
    UnsupportedMediaType,
)

VALID = "12025550143"
SEND = b'{"session_id": "s1", "number": "12025550143", "message": "hi"}'


@pytest.fixture
async def connected(client, engine):
    await call(client, "post", "/connect", json={"session_id": "s1"})
    await wait_state(client, "s1", "qr_ready")
    engine.clients["s1"].scan("573001234567")
    await wait_state(client, "s1", "connected")
    return engine.clients["s1"]


# ------------------------------------------------------------------ simple cross-site requests --
# A page on any site can POST these without a preflight: form encodings and text/plain.


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
        "application/json-patch+json",
        "text/json",
    ],
)
async def test_json_body_with_another_content_type_is_415(client, connected, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    status, answer = await call(client, "post", "/send", data=SEND, headers=headers)
    assert status == 415 and answer["success"] is False, answer
    assert "application/json" in answer["error"]
    assert not connected.sent


async def test_form_post_with_empty_body_is_415(client):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, answer = await call(client, "post", "/connect", data=b"", headers=headers)
    assert status == 415, answer
    assert (await call(client, "get", "/status"))[1]["state"] == "disconnected"


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
async def test_json_is_accepted(client, connected, content_type):
    status, answer = await call(client, "post", "/send", data=SEND, headers={"Content-Type": content_type})
    assert status == 200, answer
    assert connected.sent[-1].text == "hi"


async def test_empty_body_without_content_type_keeps_the_seed_default(client):
    status, answer = await call(client, "post", "/connect")
    assert (status, answer["session_id"]) == (200, "default")


# ---------------------------------------------------------------------------- foreign Origin --


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost.evil.example"])
async def test_state_changing_request_from_another_origin_is_403(client, connected, origin):
    headers = {"Content-Type": "application/json", "Origin": origin}
    status, answer = await call(client, "post", "/send", data=SEND, headers=headers)
    assert status == 403 and "cross-site" in answer["error"], answer
    assert not connected.sent
    status, _ = await call(client, "delete", "/sessions/s1", headers={"Origin": origin})
    assert status == 403
    status, _ = await call(
        client, "post", "/disconnect", json={"session_id": "s1"}, headers={"Origin": origin}
    )
    assert status == 403
    assert (await call(client, "get", "/status?session_id=s1"))[1]["state"] == "connected"


async def test_same_origin_requests_work(client, connected):
    # What the web page and Swagger UI send: Origin is the address the page was loaded from.
    headers = {"Content-Type": "application/json", "Origin": "http://localhost", "Host": "localhost"}
    status, answer = await call(client, "post", "/send", data=SEND, headers=headers)
    assert status == 200, answer


async def test_reads_with_a_foreign_origin_are_not_refused(client):
    # Cross-origin reads are the browser's to block (no CORS headers); the Host check covers rebinding.
    assert (await call(client, "get", "/sessions", headers={"Origin": "https://evil.example"}))[0] == 200


# ------------------------------------------------------------------------- DNS rebinding: Host --


@pytest.mark.parametrize("path", ["/sessions", "/qr?session_id=s1", "/status", "/health", "/", "/nope"])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:3002", "127.0.0.1.nip.io", "10.0.0.1"])
async def test_foreign_host_is_refused_without_api_key(client, path, host):
    status, answer = await call(client, "get", path, headers={"Host": host})
    assert status == 403 and "not served" in answer["error"], (path, host, answer)


async def test_foreign_host_cannot_change_anything(client, engine):
    headers = {"Host": "evil.example:3002", "Origin": "http://evil.example:3002"}
    status, _ = await call(client, "post", "/connect", json={"session_id": "x"}, headers=headers)
    assert status == 403 and "x" not in engine.clients


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST:3002", "localhost.", "127.0.0.1", "127.0.0.1:45678", "[::1]", "[::1]:3002"],
)
async def test_loopback_hosts_are_served(client, host):
    assert (await call(client, "get", "/sessions", headers={"Host": host}))[0] == 200


async def test_allowed_hosts_are_served(manager):
    client = create_app(manager, allowed_hosts=["wa.example.com"]).test_client()
    assert (await call(client, "get", "/sessions", headers={"Host": "wa.example.com:8443"}))[0] == 200
    assert (await call(client, "get", "/sessions", headers={"Host": "WA.example.com"}))[0] == 200
    assert (await call(client, "get", "/sessions", headers={"Host": "evil.example"}))[0] == 403
    # A page served under that name may also change things (a reverse proxy that rewrites Host).
    headers = {"Host": "127.0.0.1:3002", "Origin": "https://wa.example.com"}
    assert (await call(client, "post", "/connect", json={}, headers=headers))[0] == 200


async def test_with_an_api_key_any_host_is_served(manager):
    client = create_app(manager, api_key="k").test_client()
    headers = {"Host": "wa.example.com", "X-API-Key": "k"}
    assert (await call(client, "get", "/sessions", headers=headers))[0] == 200
    # The Origin check still holds: a key in a page's script is no licence for other sites.
    headers |= {"Origin": "https://evil.example"}
    assert (await call(client, "post", "/connect", json={}, headers=headers))[0] == 403


# ----------------------------------------------------------------------- error types -> status --


def test_domain_errors_carry_no_http_status():
    assert not hasattr(ServiceError("x"), "status_code")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidRequest, 400),
        (InvalidSessionId, 400),
        (UnknownSession, 400),
        (SessionNotConnected, 400),
        (ProtectedSession, 400),
        (UnsupportedMediaType, 415),
        (Unauthorized, 401),
        (Forbidden, 403),
        (NoQrCode, 404),
        (SendFailed, 502),
        (ServiceError, 500),
    ],
)
def test_each_error_type_maps_to_the_documented_status(error, status):
    assert status_for(error("x")) == status


def test_a_new_subclass_inherits_its_parents_status():
    class Gone(NoQrCode):
        pass

    assert status_for(Gone("x")) == 404 and Gone not in STATUS_BY_ERROR


# -------------------------------------------------------------------------- server.allowed_hosts --


def test_allowed_hosts_config(tmp_path):
    from waservice.config import ConfigError, load_config

    path = tmp_path / "config.toml"
    path.write_text('[server]\nallowed_hosts = ["wa.example.com"]\n')
    assert load_config(path, environ={}).server.allowed_hosts == ("wa.example.com",)
    for bad in ('"wa.example.com"', '[""]', "[1]"):
        path.write_text(f"[server]\nallowed_hosts = {bad}\n")
        with pytest.raises(ConfigError, match="allowed_hosts"):
            load_config(path, environ={})


async def test_openapi_documents_the_refusals(client):
    doc = await (await client.get("/openapi.json")).get_json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "403" in op["responses"], (method, path)
            if "requestBody" in op:
                assert "415" in op["responses"], (method, path)
