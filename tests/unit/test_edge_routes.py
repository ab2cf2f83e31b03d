"""/sessions pages and filters, the cached OpenAPI document, and the per-client limit on new sessions."""

from __future__ import annotations

from collections import Counter

import pytest
import trio

from waservice.api.limits import CreateRateLimit, TokenBucket, install_create_limit
from waservice.sessions.supervisor import SessionSupervisor


async def call(client, method: str, path: str, **kwargs):
    response = await getattr(client, method)(path, **kwargs)
    return response.status_code, await response.get_json(), response.headers


async def _create(client, *ids: str) -> None:
    for session_id in ids:
        assert (await client.post("/connect", json={"session_id": session_id})).status_code == 200


async def test_sessions_without_parameters_is_the_full_list(client):
    await _create(client, "a1", "a2")
    status, body, _ = await call(client, "get", "/sessions")
    assert status == 200 and body["success"] is True and body["total"] == 3
    assert sorted(s["session_id"] for s in body["sessions"]) == ["a1", "a2", "default"]


async def test_sessions_limit_offset_and_state(client):
    await _create(client, "b1", "b2", "b3")
    with trio.fail_after(5):
        while (await call(client, "get", "/sessions?state=qr_ready"))[1]["total"] < 3:
            await trio.sleep(0.005)
    _, everything, _ = await call(client, "get", "/sessions")
    ids = [s["session_id"] for s in everything["sessions"]]
    _, page, _ = await call(client, "get", "/sessions?offset=1&limit=2")
    assert [s["session_id"] for s in page["sessions"]] == ids[1:3] and page["total"] == 4
    _, waiting, _ = await call(client, "get", "/sessions?state=qr_ready&limit=2")
    assert waiting["total"] == 3 and len(waiting["sessions"]) == 2
    assert {s["state"] for s in waiting["sessions"]} == {"qr_ready"}
    _, idle, _ = await call(client, "get", "/sessions?state=disconnected")
    assert [s["session_id"] for s in idle["sessions"]] == ["default"]
    _, past_end, _ = await call(client, "get", "/sessions?offset=10")
    assert past_end["sessions"] == [] and past_end["total"] == 4


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=x", "offset=-1", "state=sleeping", "limit=1.5", "offset="]
)
async def test_sessions_bad_query_is_400(client, query):
    status, body, _ = await call(client, "get", f"/sessions?{query}")
    assert status == 400 and body["success"] is False and "invalid query" in body["error"], body


async def test_openapi_documents_the_sessions_query_and_is_built_once(client, app):
    _, doc, _ = await call(client, "get", "/openapi.json")
    params = {p["name"] for p in doc["paths"]["/sessions"]["get"]["parameters"]}
    assert {"limit", "offset", "state"} <= params
    provider = app.extensions["QUART_SCHEMA"].openapi_provider
    built = provider.schema()
    assert (await call(client, "get", "/openapi.json"))[1] == doc
    assert provider.schema() is built


def test_token_bucket_bursts_then_refills():
    bucket = TokenBucket(per_second=1.0, burst=3)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) == 0.0
    assert bucket.is_full(10.0)


def test_rate_limit_is_per_client_and_remembers_a_bounded_number():
    now = [0.0]
    limit = CreateRateLimit(per_minute=60, burst=2, clock=lambda: now[0], max_clients=3)
    assert limit.take("a") == 0.0 and limit.take("a") == 0.0
    assert limit.take("a") == pytest.approx(1.0)
    assert limit.take("b") == 0.0
    for client in ("c", "d", "e"):
        limit.take(client)
    assert len(limit._buckets) <= 3


async def test_new_sessions_are_rate_limited_per_client(app, client):
    install_create_limit(app, per_minute=1, burst=2)
    await _create(client, "r1", "r2")
    status, body, headers = await call(client, "post", "/connect", json={"session_id": "r3"})
    assert status == 429 and body["success"] is False and "too many new sessions" in body["error"]
    assert 1 <= int(headers["Retry-After"]) <= 60
    # Connecting sessions that exist is never limited.
    assert (await call(client, "post", "/connect", json={"session_id": "r1"}))[0] == 200
    assert (await call(client, "post", "/connect", json={}))[0] == 200
    other = {"scope_base": {"client": ("192.0.2.7", 1234)}}
    assert (await call(client, "post", "/connect", json={"session_id": "r3"}, **other))[0] == 200


async def test_openapi_documents_429_on_connect(client):
    _, doc, _ = await call(client, "get", "/openapi.json")
    assert "429" in doc["paths"]["/connect"]["post"]["responses"]


class _StepCounter(trio.abc.Instrument):
    """Numbers the event loop's task steps: work done in one step held the loop for all of it."""

    def __init__(self) -> None:
        self.step = 0

    def before_task_step(self, task) -> None:
        self.step += 1


async def test_a_long_session_list_does_not_hold_the_loop(client, manager, monkeypatch):
    for i in range(5000):
        await manager._start(f"many{i:04d}")  # in memory only: no store writes
    steps = _StepCounter()
    built_in_step: Counter[int] = Counter()
    real_info = SessionSupervisor.info

    def info(self):
        built_in_step[steps.step] += 1
        return real_info(self)

    monkeypatch.setattr(SessionSupervisor, "info", info)
    trio.lowlevel.add_instrument(steps)
    try:
        status, body, _ = await call(client, "get", "/sessions")
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert status == 200 and body["total"] == 5001
    # Built in slices: other requests get the loop between them.
    assert max(built_in_step.values()) <= 1000, built_in_step.most_common(1)
