"""The webhook tables beside the event log: the outbox's matching, config webhooks' stable ids,
redelivery, and pruning with the log."""

from __future__ import annotations

import time

import pytest

from waservice.errors import InvalidRequest
from waservice.events.model import Activity
from waservice.store import EventStore
from waservice.store.webhooks import DeliveryResult, WebhookTables
from waservice.webhooks.service import WebhookSpec, config_id, stored

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def tables(event_store: EventStore) -> WebhookTables:
    tables = await event_store.call(WebhookTables, event_store.connection)
    event_store.add_outbox(tables.outbox)
    return tables


def activity(session: str, type_: str, n: int = 0) -> Activity:
    return Activity(session_id=session, type=type_, timestamp=1.8e9, data={"n": n})


async def add(event_store: EventStore, tables: WebhookTables, id_: str, events, session=None) -> None:
    await event_store.call(tables.create, stored(WebhookSpec("http://h/", events, session), id_, "api"))


async def open_lanes(event_store: EventStore, tables: WebhookTables) -> set[tuple[str, str]]:
    return set(await event_store.call(tables.lanes_with_work))


async def test_the_outbox_matches_session_and_type(event_store: EventStore, tables: WebhookTables):
    await add(event_store, tables, "all", ("*",))
    await add(event_store, tables, "typing", ("chat.typing", "presence"))
    await add(event_store, tables, "s2", ("*",), "s2")
    await event_store.append(
        [activity("s1", "chat.typing"), activity("s2", "message.received"), activity("s1", "presence")]
    )
    counts = {}
    for hook in ("all", "typing", "s2"):
        counts[hook] = (await event_store.call(tables.deliveries, hook, "pending", 10, 0))[1]
    assert counts == {"all": 3, "typing": 2, "s2": 1}
    assert await open_lanes(event_store, tables) == {
        ("all", "s1"),
        ("all", "s2"),
        ("typing", "s1"),
        ("s2", "s2"),
    }


async def test_a_webhook_gets_only_events_logged_after_it(event_store: EventStore, tables: WebhookTables):
    await event_store.append([activity("s1", "presence")])
    await add(event_store, tables, "late", ("*",))
    await event_store.append([activity("s1", "presence")])
    assert (await event_store.call(tables.deliveries, "late", None, 10, 0))[1] == 1


async def test_config_webhooks_keep_their_id_and_are_disabled_when_removed(
    event_store: EventStore, tables: WebhookTables
):
    spec = WebhookSpec("http://h/a", ("*",), "s1", SECRET)
    hook = stored(spec, config_id(spec.url, spec.session_id), "config")
    assert hook.id == config_id("http://h/a", "s1") != config_id("http://h/a", None)
    await event_store.call(tables.sync_config, [hook])
    await event_store.append([activity("s1", "presence")])
    assert await event_store.call(tables.sync_config, []) == [hook.id]
    assert await event_store.call(tables.get, hook.id) is None
    await event_store.append([activity("s1", "presence")])  # not for a disabled webhook
    assert await open_lanes(event_store, tables) == set()
    await event_store.call(tables.sync_config, [hook])  # back in the file: its open delivery resumes
    assert await open_lanes(event_store, tables) == {(hook.id, "s1")}
    assert (await event_store.call(tables.deliveries, hook.id, None, 10, 0))[1] == 1


async def test_redeliver_one_event_whatever_its_status(event_store: EventStore, tables: WebhookTables):
    await add(event_store, tables, "h", ("*",))
    first, second = await event_store.append([activity("s1", "presence", 1), activity("s1", "presence", 2)])
    now = time.time()
    await event_store.call(
        tables.record,
        [
            DeliveryResult("h", first.id, "ok", now, now, 200, None),
            DeliveryResult("h", second.id, "dead", now, now, 404, "HTTP 404"),
        ],
    )
    assert await open_lanes(event_store, tables) == set()
    assert await event_store.call(tables.redeliver, "h", first.id) == 1
    (due,) = await event_store.call(tables.due, "h", "s1", 10)
    assert due.event.id == first.id and due.attempts == 0 and due.next_attempt_at == 0
    assert await event_store.call(tables.redeliver, "h", None) == 1  # the dead one
    assert [d.event.id for d in await event_store.call(tables.due, "h", "s1", 10)] == [first.id, second.id]


async def test_the_body_is_the_logged_envelope(event_store: EventStore, tables: WebhookTables):
    await add(event_store, tables, "h", ("*",))
    (event,) = await event_store.append([activity("s1", "presence", 7)])
    (due,) = await event_store.call(tables.due, "h", "s1", 10)
    assert due.body == (
        b'{"id":%d,"type":"presence","session_id":"s1","timestamp":"%s","data":{"n":7}}'
        % (event.id, event.timestamp.encode())
    )


async def test_deliveries_leave_with_their_events(event_store: EventStore, tables: WebhookTables):
    await add(event_store, tables, "h", ("*",))
    await event_store.append([activity("s1", "presence", n) for n in range(3)])
    assert await event_store.call(tables.prune) == 0
    await event_store.prune(time.time() + 1)
    assert await event_store.call(tables.prune) == 3
    assert (await event_store.call(tables.deliveries, "h", None, 10, 0))[1] == 0


async def test_delete_takes_the_deliveries_along(event_store: EventStore, tables: WebhookTables):
    await add(event_store, tables, "h", ("*",))
    await event_store.append([activity("s1", "presence")])
    assert await event_store.call(tables.delete, "h") is True
    assert await open_lanes(event_store, tables) == set()
    assert await event_store.call(tables.delete, "h") is False


def test_specs_are_validated_with_messages_that_name_the_field():
    with pytest.raises(InvalidRequest, match="http"):
        stored(WebhookSpec("file:///etc/passwd", ("*",)), "x", "api")
    with pytest.raises(InvalidRequest, match="credentials"):
        stored(WebhookSpec("http://user:pw@h/", ("*",)), "x", "api")
    with pytest.raises(InvalidRequest, match="unknown event type"):
        stored(WebhookSpec("http://h/", ("message.sent",)), "x", "api")
    assert stored(WebhookSpec("http://h/", ("presence", "*")), "x", "api").events == ("*",)
