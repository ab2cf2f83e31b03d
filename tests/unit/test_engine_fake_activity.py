"""The fake engine's activity hooks and their /_fake routes: what the event pipeline's tests inject."""

from __future__ import annotations

import trio
import trio.testing

from tests.unit.calls import call, wait_state
from waservice.engine.fake import FakeEngine
from waservice.events.model import Activity


async def connected(client, engine: FakeEngine, session_id: str = "default") -> None:
    await call(client, "post", "/connect", json={"session_id": session_id})
    await wait_state(client, session_id, "qr_ready")
    engine.clients[session_id].scan("15550001111")
    await wait_state(client, session_id, "connected")


def logged(engine: FakeEngine) -> list[Activity]:
    assert engine.activity_log is not None
    out = []
    while True:
        try:
            out.append(engine.activity_log.receive_nowait())
        except trio.WouldBlock:
            return out


async def test_incoming_message_reaches_the_sink(client, engine: FakeEngine) -> None:
    await connected(client, engine)
    status, body = await call(
        client, "post", "/_fake/incoming", json={"from": "15557770000", "text": "hi", "push_name": "Ann"}
    )
    assert status == 200 and body["success"] is True
    (activity,) = logged(engine)
    assert activity.session_id == "default" and activity.type == "message.received"
    assert activity.key == activity.data["message_id"] == body["key"]
    assert activity.data["from"] == activity.data["chat"] == "15557770000"
    assert activity.data["from_jid"] == "15557770000@s.whatsapp.net"
    assert activity.data["text"] == "hi" and activity.data["push_name"] == "Ann"
    assert activity.data["kind"] == "text" and activity.data["is_group"] is False
    assert activity.timestamp == activity.received > 0


async def test_receipt_of_a_sent_message_names_its_chat(client, engine: FakeEngine) -> None:
    await connected(client, engine)
    status, sent = await call(client, "post", "/send", json={"number": "12025550143", "message": "yo"})
    assert status == 200
    status, _ = await call(
        client, "post", "/_fake/receipt", json={"message_id": sent["result"]["id"], "status": "read"}
    )
    assert status == 200
    (ack,) = logged(engine)
    assert ack.type == "message.ack" and ack.key == f"{sent['result']['id']}:read:12025550143"
    assert ack.data["chat"] == ack.data["from"] == "12025550143" and ack.data["status"] == "read"
    assert ack.data["timestamp"].endswith("Z")


async def test_typing_and_other_activity(client, engine: FakeEngine) -> None:
    await connected(client, engine)
    await call(client, "post", "/_fake/typing", json={"from": "15557770000", "state": "recording"})
    reaction = {
        "message_id": "3EB0A",
        "emoji": "👍",
        "chat": "15557770000",
        "chat_jid": "15557770000@s.whatsapp.net",
        "from": "15557770000",
        "from_jid": "15557770000@s.whatsapp.net",
        "from_me": False,
        "is_group": False,
    }
    status, _ = await call(
        client, "post", "/_fake/activity", json={"type": "message.reaction", "data": reaction, "key": "R1"}
    )
    assert status == 200
    typing, react = logged(engine)
    assert typing.type == "chat.typing" and typing.data["state"] == "recording" and typing.key is None
    assert react.type == "message.reaction" and react.data == reaction and react.key == "R1"


async def test_bad_activity_is_a_400_and_nothing_is_reported(client, engine: FakeEngine) -> None:
    await connected(client, engine)
    status, body = await call(client, "post", "/_fake/activity", json={"type": "nope", "data": {}})
    assert status == 400 and body["success"] is False
    status, body = await call(
        client, "post", "/_fake/activity", json={"type": "presence", "data": {"from": "1"}}
    )
    assert status == 400 and "presence" in body["error"]
    status, body = await call(client, "post", "/_fake/typing", json={"from": "1", "state": "dancing"})
    assert status == 400
    assert logged(engine) == []


async def test_no_activity_while_not_connected(client, engine: FakeEngine) -> None:
    status, body = await call(client, "post", "/_fake/incoming", json={"from": "15557770000", "text": "hi"})
    assert status == 400 and "not running" in body["error"]
    assert logged(engine) == []


async def test_a_full_sink_holds_the_engine_back_instead_of_dropping(tmp_path) -> None:
    send, receive = trio.open_memory_channel[Activity](0)
    engine = FakeEngine(send)
    fake = engine.client("s", tmp_path)
    async with trio.open_nursery() as nursery:
        events_in, _events_out = trio.open_memory_channel(10)
        nursery.start_soon(fake.run, events_in)
        await trio.testing.wait_all_tasks_blocked()
        done = []

        async def inject() -> None:
            done.append(await fake.incoming("1555", "a"))

        nursery.start_soon(inject)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []  # waiting for the sink
        got = await receive.receive()
        await trio.testing.wait_all_tasks_blocked()
        assert done == [got]
        nursery.cancel_scope.cancel()
