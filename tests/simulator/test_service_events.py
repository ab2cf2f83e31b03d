"""Events end to end: the real service on the real engine, a contact of the simulator writing to a
paired account, and a real webhook receiver verifying every delivery with `standardwebhooks`."""

from __future__ import annotations

import pytest
import trio

from tests.simulator.service_api import PHONE, Api, StartService
from tests.wasim import Simulator, waproto
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

CONTACT = "12025550143"


async def hook(api: Api, nursery: trio.Nursery, events: list[str]) -> WebhookReceiver:
    """A receiver, registered for session s1's `events`; it verifies each signature itself."""
    receiver = WebhookReceiver()
    await nursery.start(receiver.run)
    response = await api.post("/webhooks", url=receiver.url, events=events, session_id="s1")
    assert response.status_code == 201, response.text
    receiver.secret = response.json()["secret"]
    return receiver


def of_type(receiver: WebhookReceiver, type_: str) -> list[dict]:
    return [r.event for r in receiver.received if r.event["type"] == type_]


async def test_a_contacts_text_a_receipt_and_typing_reach_the_webhook(
    sim: Simulator, start_service: StartService, nursery: trio.Nursery
) -> None:
    api = await start_service()
    await api.pair(sim, "s1", PHONE)
    receiver = await hook(api, nursery, ["message.received", "message.ack", "chat.typing"])

    msg_id = await sim.send_message(PHONE, sim.contact(CONTACT, push_name="Ann"), waproto.text("hi there"))
    await receiver.wait_for(lambda _: of_type(receiver, "message.received"))
    (event,) = of_type(receiver, "message.received")
    assert event["session_id"] == "s1"
    data = event["data"]
    assert data["message_id"] == msg_id and data["text"] == "hi there" and data["kind"] == "text"
    assert data["from"] == data["chat"] == CONTACT and data["from_me"] is False
    assert data["push_name"] == "Ann" and data["is_group"] is False

    sent = await api.post("/send", session_id="s1", number=CONTACT, message="hello Ann")
    assert sent.status_code == 200, sent.text
    sent_id = sent.json()["result"]["id"]
    await sim.wait_message(to=CONTACT, text="hello Ann")
    sim.send_receipt(PHONE, CONTACT, [sent_id], "read")
    sim.send_chatstate(PHONE, CONTACT, "composing")
    await receiver.wait_for(
        lambda _: (
            any(e["data"]["status"] == "read" for e in of_type(receiver, "message.ack"))
            and of_type(receiver, "chat.typing")
        )
    )
    read = next(e for e in of_type(receiver, "message.ack") if e["data"]["status"] == "read")
    assert read["data"]["message_id"] == sent_id and read["data"]["from"] == CONTACT
    (typing,) = of_type(receiver, "chat.typing")
    assert typing["data"]["state"] == "composing" and typing["data"]["from"] == CONTACT
    assert receiver.bad_signatures == 0
    ids = receiver.ok_ids()
    assert ids == sorted(ids) and len(ids) == len(set(ids))  # in log order, each once


async def test_messages_sent_while_the_service_is_down_arrive_once(
    sim: Simulator, start_service: StartService, nursery: trio.Nursery
) -> None:
    api = await start_service()
    await api.pair(sim, "s1", PHONE)
    receiver = await hook(api, nursery, ["message.received"])
    assert await trio.to_thread.run_sync(api.service.stop) == 0
    await sim.wait_disconnected(PHONE)

    contact = sim.contact(CONTACT)
    sent = [sim.queue_message(PHONE, contact, waproto.text(f"while down {n}")) for n in range(5)]
    api = await start_service()  # the same data directory: the session logs in again
    await receiver.wait_for(lambda _: len(of_type(receiver, "message.received")) >= 5)
    await api.wait_state("s1", "connected")
    for msg_id in sent:
        await sim.wait_acked(PHONE, msg_id)
    # Give a duplicate every chance to show: one more message after the offline ones.
    last = await sim.send_message(PHONE, contact, waproto.text("after"))
    await receiver.wait_for(
        lambda _: any(e["data"]["message_id"] == last for e in of_type(receiver, "message.received"))
    )
    got = [e["data"]["message_id"] for e in of_type(receiver, "message.received")]
    assert got == [*sent, last], got
    assert receiver.bad_signatures == 0
