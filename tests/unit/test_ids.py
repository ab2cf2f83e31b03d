"""Session ids: the naming rule, reserved names, case collisions, and the sessions.max limit."""

from __future__ import annotations

import pytest

from tests.unit.calls import call
from waservice.errors import InvalidSessionId
from waservice.ids import validate_session_id
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager


@pytest.mark.parametrize("name", ["con", "CON", "Prn", "aux", "nul", "com1", "COM9", "lpt1", "Lpt9"])
def test_reserved_device_names_are_invalid(name):
    with pytest.raises(InvalidSessionId, match="reserved"):
        validate_session_id(name)


@pytest.mark.parametrize("name", ["console", "com0", "com10", "lpt", "nul_", "a" * 64, "A-b_9"])
def test_names_near_reserved_ones_are_fine(name):
    assert validate_session_id(name) == name


async def test_reserved_name_refused_through_the_api(client):
    status, body = await call(client, "post", "/connect", json={"session_id": "Aux"})
    assert status == 400 and "reserved" in body["error"]


async def test_empty_session_id_is_invalid_not_default(client):
    status, body = await call(client, "get", "/status", query_string={"session_id": ""})
    assert status == 400 and "session_id" in body["error"]
    status, body = await call(client, "post", "/connect", json={"session_id": ""})
    assert status == 400 and "session_id" in body["error"]


async def test_id_differing_only_by_case_is_refused(client, tmp_path):
    assert (await call(client, "post", "/connect", json={"session_id": "Shop"}))[0] == 200
    status, body = await call(client, "post", "/connect", json={"session_id": "shop"})
    assert status == 400 and "'Shop'" in body["error"] and "case" in body["error"]
    assert (await call(client, "post", "/connect", json={"session_id": "Shop"}))[0] == 200  # itself: fine
    ids = [s["session_id"] for s in (await call(client, "get", "/sessions"))[1]["sessions"]]
    assert sorted(ids) == ["Shop", "default"]
    assert (await call(client, "delete", "/sessions/Shop"))[0] == 200
    assert (await call(client, "post", "/connect", json={"session_id": "shop"}))[0] == 200  # free again


async def test_too_many_sessions(engine, store, nursery):
    from waservice.api.app import create_app

    manager = await nursery.start(SessionManager(engine, store, ReconnectPolicy(), max_sessions=3).run)
    client = create_app(manager).test_client()
    for sid in ("a", "b"):  # with `default`, three
        assert (await call(client, "post", "/connect", json={"session_id": sid}))[0] == 200
    status, body = await call(client, "post", "/connect", json={"session_id": "c"})
    assert status == 429 and body["success"] is False and "sessions.max" in body["error"]
    assert (await call(client, "post", "/connect", json={"session_id": "a"}))[0] == 200  # existing: fine
    assert (await call(client, "delete", "/sessions/b"))[0] == 200
    assert (await call(client, "post", "/connect", json={"session_id": "c"}))[0] == 200
