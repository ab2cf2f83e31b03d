"""Per-session API keys (issue 11 item 3): created and revoked by the admin, stored hashed, and
unable to reach any other session on any route, checked on every route of the OpenAPI document."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.unit.calls import call
from tests.unit.test_webhook_http import start_webhooks
from waservice.api.app import create_app
from waservice.sessions.machine import State
from waservice.sessions.manager import SessionManager

ADMIN = {"X-API-Key": "admin-key-0123456789"}
# Routes that name no session: each shows a session key only what is its own (or nothing private).
SESSIONLESS = {("get", "/health"), ("get", "/ready"), ("get", "/sessions"), ("get", "/webhooks")}
# Routes a session key may not use even for its own session.
ADMIN_ONLY = {
    ("get", "/metrics"),
    ("delete", "/sessions/{session_id}"),
    ("get", "/sessions/{session_id}/keys"),
    ("post", "/sessions/{session_id}/keys"),
    ("delete", "/sessions/{session_id}/keys/{key_id}"),
}


@pytest.fixture
async def admin(manager: SessionManager, event_store, recorder, nursery):
    webhooks = await start_webhooks(event_store, recorder, nursery)
    return create_app(manager, api_key=ADMIN["X-API-Key"], webhook_service=webhooks).test_client()


async def new_key(admin, session_id: str) -> dict[str, Any]:
    status, body = await call(admin, "post", f"/sessions/{session_id}/keys", headers=ADMIN)
    assert status == 200, body
    return body


async def two_sessions(admin) -> str:
    """Sessions alice and bob; returns a key of alice's."""
    for session_id in ("alice", "bob"):
        assert (await call(admin, "post", "/connect", json={"session_id": session_id}, headers=ADMIN))[
            0
        ] == 200
    return (await new_key(admin, "alice"))["key"]


async def test_create_list_revoke(admin, tmp_path: Path):
    await two_sessions(admin)
    created = await new_key(admin, "bob")
    assert created["key"].startswith("wask_") and len(created["key"]) > 50
    assert set(created) == {"success", "session_id", "key_id", "key", "created_at"}
    assert created["key_id"] in created["key"]

    status, body = await call(admin, "get", "/sessions/bob/keys", headers=ADMIN)
    assert status == 200 and [k["key_id"] for k in body["keys"]] == [created["key_id"]]
    assert created["key"] not in str(body)  # shown once only
    key = {"X-API-Key": created["key"]}
    assert (await call(admin, "get", "/status?session_id=bob", headers=key))[0] == 200
    assert (
        await call(
            admin, "get", "/status?session_id=bob", headers={"Authorization": f"Bearer {created['key']}"}
        )
    )[0] == 200

    # Stored hashed: the key is nowhere in the database.
    db = tmp_path / "data" / "waservice.db"
    raw = b"".join(p.read_bytes() for p in db.parent.glob("waservice.db*"))
    assert created["key"].encode() not in raw
    assert created["key"].split("_", 2)[2].encode() not in raw

    path = f"/sessions/bob/keys/{created['key_id']}"
    status, body = await call(admin, "delete", path, headers=ADMIN)
    assert (status, body["key_id"], body["success"]) == (200, created["key_id"], True)
    assert (await call(admin, "get", "/status?session_id=bob", headers=key))[0] == 401
    status, body = await call(admin, "delete", path, headers=ADMIN)
    assert status == 400 and "no key" in body["error"]
    status, body = await call(admin, "post", "/sessions/nobody/keys", headers=ADMIN)
    assert status == 400 and "not found" in body["error"]


async def test_a_wrong_key_is_401(admin):
    key = await two_sessions(admin)
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), "wask_00_x", "wask_", key + "x"):
        status, body = await call(admin, "get", "/status?session_id=alice", headers={"X-API-Key": wrong})
        assert status == 401 and body["success"] is False, wrong


async def test_a_session_key_sees_only_its_session(admin):
    key = {"X-API-Key": await two_sessions(admin)}
    status, body = await call(admin, "get", "/sessions", headers=key)
    assert status == 200 and [s["session_id"] for s in body["sessions"]] == ["alice"] and body["total"] == 1
    status, body = await call(admin, "get", "/sessions", headers=ADMIN)
    assert {s["session_id"] for s in body["sessions"]} == {"default", "alice", "bob"}


async def test_deleting_a_session_deletes_its_keys(admin, manager):
    key = {"X-API-Key": await two_sessions(admin)}
    assert (await call(admin, "delete", "/sessions/alice", headers=ADMIN))[0] == 200
    assert manager.store.keys("alice") == []
    # A new session by the same name does not inherit the old key.
    assert (await call(admin, "post", "/connect", json={"session_id": "alice"}, headers=ADMIN))[0] == 200
    assert (await call(admin, "get", "/status?session_id=alice", headers=key))[0] == 401


async def test_a_session_key_works_on_its_own_session(admin, manager):
    key = {"X-API-Key": await two_sessions(admin)}
    with trio.fail_after(10):
        await manager.get("alice").wait_for(lambda state: state is State.QR_READY)
    status, body = await call(admin, "get", "/qr?session_id=alice", headers=key)
    assert status == 200 and body["code"], body
    assert (await call(admin, "post", "/disconnect", json={"session_id": "alice"}, headers=key))[0] == 200
    status, body = await call(admin, "post", "/connect", json={"session_id": "alice"}, headers=key)
    assert (status, body["session_id"]) == (200, "alice")


# -- every route of the OpenAPI document ------------------------------------------------------------


def operations(doc: dict) -> list[tuple[str, str, dict]]:
    return [(method, path, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def takes_session(op: dict) -> set[str]:
    """Where the operation reads a session id: 'path', 'query', 'body'."""
    where = {p["in"] for p in op.get("parameters", []) if p["name"] == "session_id"}
    if "session_id" in _body_schema(op).get("properties", {}):
        where.add("body")
    return where


def _body_schema(op: dict) -> dict:
    return op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})


def request_for(
    path: str, op: dict, session_id: str | None, webhook_id: str = "somehook"
) -> tuple[str, dict]:
    """A valid request naming `session_id` wherever the operation takes one (None: nowhere)."""
    url = path.replace("{key_id}", "somekey").replace("{webhook_id}", webhook_id)
    url = url.replace("{session_id}", session_id or "default")
    kwargs: dict[str, Any] = {}
    where = takes_session(op)
    if "query" in where and session_id is not None:
        url += f"?session_id={session_id}"
    schema = _body_schema(op)
    if schema:
        body = {
            name: prop["examples"][0]
            for name, prop in schema.get("properties", {}).items()
            if name in schema.get("required", [])
        }
        if session_id is not None:
            body["session_id"] = session_id
        kwargs["json"] = body
    return url, kwargs


async def webhook_of(admin, session_id: str) -> str:
    body = {"url": "http://127.0.0.1:9/hook", "events": ["*"], "session_id": session_id}
    status, created = await call(admin, "post", "/webhooks", json=body, headers=ADMIN)
    assert status == 201, created
    return created["webhook"]["id"]


async def test_every_route_keeps_a_session_key_to_its_session(admin):
    key = {"X-API-Key": await two_sessions(admin)}
    hooks = {name: await webhook_of(admin, name) for name in ("alice", "bob")}
    doc = await (await admin.get("/openapi.json")).get_json()
    ops = operations(doc)
    assert len(ops) >= 14
    for method, path, op in ops:
        where = takes_session(op)
        route = (method, path)
        if where:
            # Naming another session, anywhere: 403.
            url, kwargs = request_for(path, op, "bob")
            status, body = await call(admin, method, url, headers=key, **kwargs)
            assert (status, body["success"]) == (403, False), (route, body)
            assert "acts on session 'alice' only" in body["error"] or route in ADMIN_ONLY, (route, body)
            if "path" not in where:
                # Naming none means `default`, which is not alice's either.
                url, kwargs = request_for(path, op, None)
                status, body = await call(admin, method, url, headers=key, **kwargs)
                assert status == 403, (route, body)
        elif route not in SESSIONLESS:
            # Another session's webhook, for the routes of one.
            url, kwargs = request_for(path, op, None, hooks["bob"])
            status, body = await call(admin, method, url, headers=key, **kwargs)
            assert status == 403, f"{route} names no session: mark it admin_only or filtered_by_caller"
        # Its own session: refused only on the admin's routes.
        url, kwargs = request_for(path, op, "alice", hooks["alice"])
        status, body = await call(admin, method, url, headers=key, **kwargs)
        if route in ADMIN_ONLY:
            assert status == 403 and "admin API key" in body["error"], (route, body)
        else:
            assert status not in (401, 403), (route, status, body)
    # bob is untouched, and the admin routes still work for the admin.
    status, body = await call(admin, "get", "/status?session_id=bob", headers=ADMIN)
    assert status == 200 and body["state"] in ("connecting", "qr_ready"), body


async def test_the_fake_engines_controls_are_the_admins(admin):
    key = {"X-API-Key": await two_sessions(admin)}
    status, _ = await call(admin, "post", "/_fake/refuse", json={"refuse": True}, headers=key)
    assert status == 403


async def test_keys_survive_a_restart(tmp_path: Path):
    from waservice.store.registry import Registry

    registry = Registry(tmp_path / "waservice.db")
    registry.ensure("alice")
    new = registry.keys.create("alice")
    assert new is not None
    registry.close()
    registry = Registry(tmp_path / "waservice.db")
    assert registry.keys.check(new.key) is not None
    assert registry.keys.create("ghost") is None  # no key for a session that is not registered
    registry.remove("alice")
    assert registry.keys.check(new.key) is None
    registry.close()
    rows = sqlite3.connect(tmp_path / "waservice.db").execute("SELECT COUNT(*) FROM session_keys").fetchone()
    assert rows == (0,)


async def test_a_session_key_sees_and_makes_only_its_own_webhooks(admin):
    key = {"X-API-Key": await two_sessions(admin)}
    await webhook_of(admin, "bob")
    everyone = {"url": "http://127.0.0.1:9/hook", "events": ["*"], "session_id": None}
    assert (await call(admin, "post", "/webhooks", json=everyone, headers=ADMIN))[0] == 201
    assert (await call(admin, "post", "/webhooks", json=everyone, headers=key))[0] == 403
    # null names `default`: even the default session's key may not make a webhook of every session
    default_key = {"X-API-Key": (await new_key(admin, "default"))["key"]}
    status, body = await call(admin, "post", "/webhooks", json=everyone, headers=default_key)
    assert status == 403 and "admin API key" in body["error"]
    status, body = await call(
        admin, "post", "/webhooks", json={**everyone, "session_id": "alice"}, headers=key
    )
    assert status == 201, body
    status, body = await call(admin, "get", "/webhooks", headers=key)
    assert [w["session_id"] for w in body["webhooks"]] == ["alice"]
    status, body = await call(admin, "get", "/webhooks", headers=ADMIN)
    assert sorted(str(w["session_id"]) for w in body["webhooks"]) == ["None", "alice", "bob"]
