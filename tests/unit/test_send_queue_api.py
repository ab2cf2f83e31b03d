"""The send queue through the API on the fake engine: its depth in /status and /sessions, and a
full queue's 429 with Retry-After."""

from __future__ import annotations

import functools

import trio

from tests.unit.calls import call, wait_state
from waservice.api.app import create_app
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager
from waservice.sessions.sendqueue import Pacing

BODY = {"session_id": "s1", "number": "12025550143", "message": "hello"}


async def test_depth_and_a_full_queue(engine, store, recorder, nursery):
    manager = SessionManager(
        engine,
        store,
        ReconnectPolicy(),
        record=recorder.record,
        pacing=Pacing(min_interval=3.0),
        queue_size=2,
    )
    client = create_app(await nursery.start(manager.run)).test_client()
    await call(client, "post", "/connect", json={"session_id": "s1"})
    await wait_state(client, "s1", "qr_ready")
    engine.clients["s1"].scan("573001234567")
    await wait_state(client, "s1", "connected")
    engine.ack_delay = 30.0
    for _ in range(2):
        nursery.start_soon(functools.partial(client.post, "/send", json=BODY))
    with trio.fail_after(5):
        while (await call(client, "get", "/status?session_id=s1"))[1]["queue_depth"] < 2:
            await trio.sleep(0.01)
    _, listed = await call(client, "get", "/sessions")
    assert {s["session_id"]: s["queue_depth"] for s in listed["sessions"]} == {"default": 0, "s1": 2}
    response = await client.post("/send", json=BODY)
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert "sending.queue_size is 2" in (await response.get_json())["error"]
    assert engine.clients["s1"].pending_sends == 1  # one at a time: the second waits its turn
    assert manager.metrics.registry.get_sample_value("waservice_sends_total", {"outcome": "queue_full"}) == 1
