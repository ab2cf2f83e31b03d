"""The event pipeline's metrics: events logged and how fast they became durable; webhook attempts
by outcome and their lag."""

from __future__ import annotations

import time

import trio

from tests.unit.test_webhook_http import start_webhooks
from tests.webhook_receiver import Answer, WebhookReceiver
from waservice.events.hub import EventHub
from waservice.events.model import Activity
from waservice.events.recorder import EventRecorder
from waservice.metrics import Metrics
from waservice.store import EventStore
from waservice.webhooks.service import WebhookSpec


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_logged_events_and_webhook_outcomes_are_counted(event_store: EventStore, nursery: trio.Nursery):
    metrics = Metrics()
    recorder = EventRecorder(event_store, EventHub(0), metrics=metrics)
    await nursery.start(recorder.run)
    receiver = await nursery.start(WebhookReceiver(default=Answer(200)).run)
    receiver.script(Answer(500), Answer(410))  # s1's first: retried, then dead; s1's second: ok
    webhooks = await start_webhooks(event_store, recorder, nursery, metrics=metrics)
    await webhooks.create(WebhookSpec(receiver.url, ("chat.typing",), None, None))

    now = time.time()
    for n, key in enumerate(("a", "b", "b")):  # the second "b" is a duplicate: not logged again
        await recorder.sink.send(
            Activity(session_id="s1", type="chat.typing", timestamp=now, data={"n": n}, key=key, received=now)
        )
    await receiver.wait_for(lambda got: len(got) == 3, timeout=30)
    with trio.fail_after(30):
        while value(metrics, "waservice_webhook_deliveries_total", outcome="ok") < 1:
            await trio.sleep(0.01)

    assert value(metrics, "waservice_events_logged_total", type="chat.typing") == 2
    assert value(metrics, "waservice_event_durable_seconds_count") == 3  # every copy became durable
    assert value(metrics, "waservice_webhook_deliveries_total", outcome="retried") == 1
    assert value(metrics, "waservice_webhook_deliveries_total", outcome="dead") == 1
    assert value(metrics, "waservice_webhook_delivery_lag_seconds_count") == 1
    assert metrics.registry.get_sample_value("waservice_webhook_delivery_lag_seconds_sum") < 30
