"""Webhooks over real HTTP: the service's sender and dispatcher against a trio receiver that checks
every signature with the `standardwebhooks` library; and the /webhooks routes."""

from __future__ import annotations

import trio

from tests.webhook_receiver import Answer, WebhookReceiver
from waservice.api.app import create_app
from waservice.events.model import Activity
from waservice.events.recorder import EventRecorder
from waservice.metrics import Metrics
from waservice.sessions.manager import SessionManager
from waservice.store import EventStore
from waservice.store.webhooks import WebhookTables
from waservice.webhooks.dispatcher import Dispatcher
from waservice.webhooks.schedule import RetryPolicy
from waservice.webhooks.sender import HttpSender
from waservice.webhooks.service import WebhookService, WebhookSpec

FAST = RetryPolicy(delays=(0.05, 0.1, 0.1, 0.1, 0.1), repeat=0.1, max_age=60, jitter=0.1, min_delay=0.01)


async def start_webhooks(
    event_store: EventStore,
    recorder: EventRecorder,
    nursery: trio.Nursery,
    timeout: float = 5.0,
    metrics: Metrics | None = None,
) -> WebhookService:
    tables = await event_store.call(WebhookTables, event_store.connection)
    event_store.add_outbox(tables.outbox)
    sender = HttpSender(timeout=timeout)
    dispatcher = Dispatcher(event_store, tables, recorder.hub, sender, FAST, metrics=metrics)
    await nursery.start(dispatcher.run)
    return WebhookService(event_store, tables, dispatcher)


async def emit(recorder: EventRecorder, session: str, n: int) -> None:
    await recorder.sink.send(Activity(session_id=session, type="chat.typing", timestamp=1.8e9, data={"n": n}))


async def receiver_for(nursery: trio.Nursery, *answers: Answer) -> WebhookReceiver:
    receiver = await nursery.start(WebhookReceiver().run)
    receiver.script(*answers)
    return receiver


async def test_500_five_times_then_200_arrives_in_order_and_later_events_follow(
    event_store: EventStore, recorder: EventRecorder, nursery: trio.Nursery
):
    webhooks = await start_webhooks(event_store, recorder, nursery)
    receiver = await receiver_for(nursery, *[Answer(500)] * 5)
    webhook, secret = await webhooks.create(WebhookSpec(receiver.url, ("*",)))
    receiver.secret = secret
    for n in range(3):
        await emit(recorder, "s1", n)
    await receiver.wait_for(lambda got: len(receiver.ok_ids()) == 3)
    ids = [int(r.webhook_id) for r in receiver.received]
    assert ids[:6] == [ids[0]] * 6 and receiver.ok_ids() == sorted(receiver.ok_ids())
    assert [r.event["data"]["n"] for r in receiver.received if r.answered == 200] == [0, 1, 2]
    assert receiver.bad_signatures == 0
    first = receiver.received[0]
    assert first.headers["content-type"] == "application/json" and "waservice" in first.headers["user-agent"]
    assert set(first.event) == {"id", "type", "session_id", "timestamp", "data"}
    page = await _wait_status(webhooks, webhook.id, "ok", 3)
    assert sorted(d.attempts for d in page) == [1, 1, 6]


async def test_410_is_dead_at_once_and_redeliver_sends_it_again(
    event_store: EventStore, recorder: EventRecorder, nursery: trio.Nursery
):
    webhooks = await start_webhooks(event_store, recorder, nursery)
    receiver = await receiver_for(nursery, Answer(410))
    webhook, receiver.secret = await webhooks.create(WebhookSpec(receiver.url, ("*",)))
    await emit(recorder, "s1", 1)
    await emit(recorder, "s1", 2)
    await receiver.wait_for(lambda got: len(got) == 2)
    dead = await _wait_status(webhooks, webhook.id, "dead", 1)
    assert dead[0].last_status_code == 410 and dead[0].attempts == 1
    assert await webhooks.redeliver(webhook.id, None) == 1
    await receiver.wait_for(lambda got: len(got) == 3)
    assert int(receiver.received[-1].webhook_id) == dead[0].event_id
    await _wait_status(webhooks, webhook.id, "ok", 2)
    assert receiver.bad_signatures == 0


async def test_a_receiver_slower_than_the_timeout_is_retried(
    event_store: EventStore, recorder: EventRecorder, nursery: trio.Nursery
):
    webhooks = await start_webhooks(event_store, recorder, nursery, timeout=0.3)
    receiver = await receiver_for(nursery, Answer(200, delay=5))
    webhook, _ = await webhooks.create(WebhookSpec(receiver.url, ("*",)))
    await emit(recorder, "s1", 1)
    await receiver.wait_for(lambda got: len(got) == 2)
    (ok,) = await _wait_status(webhooks, webhook.id, "ok", 1)
    assert ok.attempts == 2 and ok.last_error is None


async def _wait_status(webhooks: WebhookService, webhook_id: str, status: str, count: int) -> list:
    with trio.fail_after(30):
        while True:
            page, total = await webhooks.deliveries(webhook_id, status, 50, 0)
            if total == count:
                return page
            await trio.sleep(0.02)  # the result is written just after the receiver answered


async def test_routes_create_list_get_deliveries_redeliver_delete(
    manager: SessionManager, event_store: EventStore, recorder: EventRecorder, nursery: trio.Nursery
):
    webhooks = await start_webhooks(event_store, recorder, nursery)
    client = create_app(manager, webhook_service=webhooks).test_client()
    url = "http://127.0.0.1:9/hook"
    created = await client.post("/webhooks", json={"url": url, "events": ["message.received"]})
    assert created.status_code == 201
    body = await created.get_json()
    assert body["success"] and body["secret"].startswith("whsec_")
    hook = body["webhook"]
    assert hook["url"] == url and hook["events"] == ["message.received"] and hook["session_id"] is None

    listed = await (await client.get("/webhooks")).get_json()
    assert [w["id"] for w in listed["webhooks"]] == [hook["id"]]
    assert body["secret"] not in str(listed) and "secret" not in listed["webhooks"][0]
    one = await client.get(f"/webhooks/{hook['id']}")
    assert (await one.get_json())["webhook"] == hook

    deliveries = await client.get(f"/webhooks/{hook['id']}/deliveries?status=dead&limit=5")
    assert (await deliveries.get_json()) == {"deliveries": [], "total": 0, "success": True}
    again = await client.post(f"/webhooks/{hook['id']}/redeliver", json={})
    assert (await again.get_json()) == {"redelivered": 0, "success": True}

    assert (await client.delete(f"/webhooks/{hook['id']}")).status_code == 200
    missing = await client.get(f"/webhooks/{hook['id']}")
    assert missing.status_code == 404 and (await missing.get_json())["success"] is False


async def test_routes_refuse_what_cannot_be_delivered(
    manager: SessionManager, event_store: EventStore, recorder: EventRecorder, nursery: trio.Nursery
):
    webhooks = await start_webhooks(event_store, recorder, nursery)
    client = create_app(manager, webhook_service=webhooks).test_client()
    for bad in [
        {"url": "ftp://example.com/", "events": ["*"]},
        {"url": "http:///nohost", "events": ["*"]},
        {"url": "http://h/", "events": []},
        {"url": "http://h/", "events": ["message.nope"]},
        {"url": "http://h/", "events": ["*"], "session_id": "bad id"},
        {"url": "http://h/", "events": ["*"], "secret": "plain"},
        {"url": "http://h/", "events": ["*"], "extra": 1},
        {"url": "hTtps://{", "events": ["*"]},  # found by schemathesis
        {"url": "http://a b/", "events": ["*"]},
        {"url": "http://h:99999/", "events": ["*"]},
    ]:
        response = await client.post("/webhooks", json=bad)
        assert response.status_code == 400, bad
        assert (await response.get_json())["success"] is False
    assert (await client.get("/webhooks/wh_none/deliveries")).status_code == 404
    assert (await client.get("/webhooks/wh_none/deliveries?status=lost")).status_code == 400
    assert (await client.post("/webhooks/wh_none/redeliver", json={})).status_code == 404
    hook = (await (await client.post("/webhooks", json={"url": "http://h/", "events": ["*"]})).get_json())[
        "webhook"
    ]
    # ids beyond SQLite's integers (found by schemathesis: a 500)
    huge = 2899933519438275411968
    assert (await client.get(f"/webhooks/{hook['id']}/deliveries?offset={huge}")).status_code == 400
    assert (
        await client.post(f"/webhooks/{hook['id']}/redeliver", json={"event_id": huge})
    ).status_code == 400


async def test_429_with_retry_after_is_retried_no_sooner(
    event_store: EventStore, recorder: EventRecorder, nursery: trio.Nursery
):
    webhooks = await start_webhooks(event_store, recorder, nursery)
    receiver = await receiver_for(nursery, Answer(429, headers=(("retry-after", "1"),)))
    await webhooks.create(WebhookSpec(receiver.url, ("*",)))
    await emit(recorder, "s1", 1)
    await receiver.wait_for(lambda got: len(got) == 2)
    first, second = receiver.received
    assert second.at - first.at >= 0.99 and first.webhook_id == second.webhook_id
