"""The messaging routes of issue 9 through the API, on the fake engine: what reaches the engine,
the message index behind replies, reactions, edits, deletes and reads, and the validation list
(each a clear 4xx that leaves the session connected)."""

from __future__ import annotations

import pytest

from tests.unit.calls import call, wait_state
from tests.unit.messaging_helpers import CONTACT, OWN_PHONE, connected, indexed
from waservice.api.app import create_app
from waservice.engine.content import ContactCard, Edit, Location, Quote, Reaction, Revoke, Text
from waservice.engine.fake import FakeEngine


@pytest.fixture
def engine(recorder) -> FakeEngine:
    """Its activity goes to the log (and so into the message index), as the real engine's does."""
    return FakeEngine(recorder.sink)


@pytest.fixture
async def online(client, engine):
    await connected(client, engine)
    return engine.clients["default"]


async def still_connected(client) -> None:
    _, body = await call(client, "get", "/status")
    assert body["state"] == "connected", body


async def test_check_numbers(client, engine, online):
    engine.not_on_whatsapp = {"12025550143"}
    status, body = await call(
        client, "post", "/check-numbers", json={"numbers": ["+1 415 555 2671", "12025550143"]}
    )
    assert status == 200, body
    assert body["results"] == [
        {"number": CONTACT, "on_whatsapp": True, "jid": f"{CONTACT}@s.whatsapp.net"},
        {"number": "12025550143", "on_whatsapp": False, "jid": None},
    ]
    too_many = [f"1415555{n:04d}" for n in range(51)]
    status, body = await call(client, "post", "/check-numbers", json={"numbers": too_many})
    assert status == 400 and "numbers" in body["error"]
    status, body = await call(client, "post", "/check-numbers", json={"numbers": ["123"]})
    assert status == 400 and "number" in body["error"]
    await still_connected(client)


async def test_send_checks_the_number_when_asked(client, engine, online):
    engine.not_on_whatsapp = {"12025550143"}
    send = {"number": "12025550143", "message": "hi", "check_number": True}
    status, body = await call(client, "post", "/send", json=send)
    assert status == 400 and body["error"] == "12025550143 is not on WhatsApp; nothing was sent"
    assert not online.sent
    status, body = await call(client, "post", "/send", json={**send, "check_number": False})
    assert status == 404 and "12025550143@s.whatsapp.net is not on WhatsApp" in body["error"], body
    assert not online.sent


async def test_a_person_jid_has_no_dash(client, online):
    """Only an old group's id has a dash; schemathesis found whatsmeow answering one as a person 502."""
    chat = "071640006154-66664299835504@s.whatsapp.net"
    status, body = await call(client, "post", "/send-location", json={"chat": chat, "lat": 1, "lng": 2})
    assert status == 400 and "chat must be" in body["error"], body
    status, _ = await call(client, "post", "/send", json={"chat": "1203630-1600000000@g.us", "message": "x"})
    assert status == 200 and online.sent[-1].chat == "1203630-1600000000@g.us"


async def test_check_number_default_from_config(manager, message_index, engine):
    client = create_app(manager, messages=message_index, check_number=True).test_client()
    await connected(client, engine)
    engine.not_on_whatsapp = {"12025550143"}
    status, _ = await call(client, "post", "/send", json={"number": "12025550143", "message": "hi"})
    assert status == 400 and not engine.clients["default"].sent


async def test_send_to_a_chat_jid_and_reply(client, engine, online, message_index):
    group = "120363025246125888@g.us"
    status, body = await call(client, "post", "/send", json={"chat": group, "message": "first"})
    assert status == 200 and body["result"]["to"] == group
    first = body["result"]["id"]
    assert online.sent[-1].chat == group

    status, body = await call(
        client, "post", "/send", json={"chat": group, "message": "re", "reply_to": first}
    )
    assert status == 200, body
    assert online.sent[-1].content == Text(
        text="re", reply_to=Quote(id=first, sender=f"{OWN_PHONE}@s.whatsapp.net", text="first")
    )

    received = await online.incoming(CONTACT, "a question", message_id="IN1")
    await indexed(message_index, "default", "IN1")
    status, body = await call(
        client, "post", "/send", json={"number": CONTACT, "message": "an answer", "reply_to": "IN1"}
    )
    assert status == 200, body
    assert online.sent[-1].content.reply_to == Quote(
        id="IN1", sender=f"{CONTACT}@s.whatsapp.net", text="a question"
    )
    assert received.data["message_id"] == "IN1"

    status, body = await call(
        client, "post", "/send", json={"number": CONTACT, "message": "x", "reply_to": "NOPE"}
    )
    assert status == 404 and "no message NOPE" in body["error"]
    status, body = await call(
        client, "post", "/send", json={"number": CONTACT, "chat": group, "message": "x"}
    )
    assert status == 400 and "exactly one of `chat` and `number`" in body["error"]
    status, body = await call(client, "post", "/send", json={"chat": "12@example.com", "message": "x"})
    assert status == 400 and "chat must be" in body["error"]
    await still_connected(client)


async def test_location_and_contact(client, online):
    status, body = await call(
        client,
        "post",
        "/send-location",
        json={"chat": CONTACT, "lat": 4.6097, "lng": -74.0817, "name": "Bogotá", "address": "Cra 7"},
    )
    assert status == 200 and body["message"] == "Location sent successfully"
    assert online.sent[-1].content == Location(lat=4.6097, lng=-74.0817, name="Bogotá", address="Cra 7")
    status, body = await call(client, "post", "/send-location", json={"chat": CONTACT, "lat": 91, "lng": 0})
    assert status == 400 and "lat" in body["error"]

    status, body = await call(
        client,
        "post",
        "/send-contact",
        json={"chat": CONTACT, "name": "Ana; Gómez\nX-EVIL:1", "phone": "+57 300 765 4321"},
    )
    assert status == 200, body
    card = online.sent[-1].content
    assert isinstance(card, ContactCard) and card.name == "Ana; Gómez\nX-EVIL:1"
    lines = card.vcard.split("\r\n")
    assert lines[0] == "BEGIN:VCARD" and lines[-1] == "END:VCARD"
    assert "FN:Ana\\; Gómez\\nX-EVIL:1" in lines  # escaped: no property of its own
    assert not any(line.startswith("X-EVIL") for line in lines)
    assert "TEL;type=CELL;type=VOICE;waid=573007654321:+573007654321" in lines
    status, body = await call(
        client, "post", "/send-contact", json={"chat": CONTACT, "name": "A", "phone": "12"}
    )
    assert (status == 400 and "phone" in body["error"]) or "number" in body["error"]


async def test_react_edit_delete(client, online, message_index):
    _, body = await call(client, "post", "/send", json={"number": CONTACT, "message": "typo"})
    mine = body["result"]["id"]
    await online.incoming(CONTACT, "theirs", message_id="IN2")
    await indexed(message_index, "default", "IN2")

    status, body = await call(
        client, "post", "/react", json={"chat": CONTACT, "message_id": "IN2", "emoji": "👍"}
    )
    assert status == 200, body
    assert online.sent[-1].content == Reaction(
        message_id="IN2", sender=f"{CONTACT}@s.whatsapp.net", from_me=False, emoji="👍"
    )
    status, body = await call(
        client, "post", "/react", json={"chat": CONTACT, "message_id": mine, "emoji": ""}
    )
    assert status == 200 and online.sent[-1].content.emoji == "" and online.sent[-1].content.from_me
    status, body = await call(
        client, "post", "/react", json={"chat": CONTACT, "message_id": "IN2", "emoji": "ok"}
    )
    assert status == 400 and "emoji" in body["error"]

    status, body = await call(
        client, "post", "/edit", json={"chat": CONTACT, "message_id": mine, "message": "fixed"}
    )
    assert status == 200 and online.sent[-1].content == Edit(message_id=mine, text="fixed")
    assert (await message_index.get("default", mine)).text == "fixed"  # a later quote shows the edit
    status, body = await call(
        client, "post", "/edit", json={"chat": CONTACT, "message_id": "IN2", "message": "x"}
    )
    assert status == 400 and "only your own can be edited" in body["error"]

    status, body = await call(client, "post", "/delete-message", json={"chat": CONTACT, "message_id": mine})
    assert status == 200 and body["message"] == "Deletion sent successfully"
    # Its own phone-number JID: its LID would make whatsmeow send an admin revoke.
    assert online.sent[-1].content == Revoke(message_id=mine, sender=f"{OWN_PHONE}@s.whatsapp.net")
    status, body = await call(client, "post", "/delete-message", json={"chat": CONTACT, "message_id": "IN2"})
    assert status == 400 and "only your own" in body["error"]

    # The message is in another chat: not found there.
    status, body = await call(
        client, "post", "/react", json={"chat": "12025550143", "message_id": "IN2", "emoji": "👍"}
    )
    assert status == 404 and "in chat 12025550143" in body["error"]
    for path, extra in (("/react", {"emoji": "👍"}), ("/edit", {"message": "x"}), ("/delete-message", {})):
        status, body = await call(
            client, "post", path, json={"chat": CONTACT, "message_id": "UNKNOWN1", **extra}
        )
        assert status == 404 and "no message UNKNOWN1" in body["error"], path
    await still_connected(client)


async def test_admin_deletes_a_members_message_in_a_group(client, online, message_index):
    await online.incoming(CONTACT, "spam", message_id="G1", group="120363025246125888")
    await indexed(message_index, "default", "G1")
    status, body = await call(
        client, "post", "/delete-message", json={"chat": "120363025246125888@g.us", "message_id": "G1"}
    )
    assert status == 200, body
    assert online.sent[-1].content == Revoke(message_id="G1", sender=f"{CONTACT}@s.whatsapp.net")
    assert online.sent[-1].chat == "120363025246125888@g.us"


async def test_read(client, online, message_index):
    await online.incoming(CONTACT, "one", message_id="R1")
    await online.incoming(CONTACT, "two", message_id="R2")
    await indexed(message_index, "default", "R2")
    status, body = await call(
        client, "post", "/read", json={"chat": CONTACT, "message_ids": ["R1", "R2", "R1"]}
    )
    assert status == 200 and body["message"] == "2 message(s) marked read"
    assert online.reads == [(f"{CONTACT}@s.whatsapp.net", f"{CONTACT}@s.whatsapp.net", ["R1", "R2"])]
    status, body = await call(client, "post", "/read", json={"chat": CONTACT, "message_ids": ["R1", "NOPE"]})
    assert status == 404 and "NOPE" in body["error"]
    assert len(online.reads) == 1  # nothing half-done
    status, body = await call(client, "post", "/read", json={"chat": CONTACT, "message_ids": []})
    assert status == 400


@pytest.mark.parametrize("state", ["composing", "recording", "paused"])
async def test_typing(client, online, state):
    status, body = await call(client, "post", "/typing", json={"chat": CONTACT, "state": state})
    assert status == 200, body
    assert online.typing_states == [(f"{CONTACT}@s.whatsapp.net", state)]


@pytest.mark.parametrize("state", ["typing", "COMPOSING", "", 1, None])
async def test_illegal_typing_state_never_reaches_the_engine(client, online, state):
    status, body = await call(client, "post", "/typing", json={"chat": CONTACT, "state": state})
    assert status == 400 and "state" in body["error"]
    assert online.typing_states == []
    await still_connected(client)


async def test_not_connected_is_a_clear_400(client, engine):
    status, body = await call(client, "post", "/typing", json={"chat": CONTACT, "state": "paused"})
    assert status == 400 and "not connected" in body["error"]
    status, body = await call(client, "post", "/check-numbers", json={"numbers": [CONTACT]})
    assert status == 400 and "not connected" in body["error"]


async def test_pair_code(client, engine):
    status, body = await call(
        client, "post", "/pair-code", json={"session_id": "p1", "number": "+57 300 1234567"}
    )
    assert status == 200 and body == {"success": True, "session_id": "p1", "code": "FAKE-0001"}
    assert engine.clients["p1"].pair_codes == [OWN_PHONE]
    status_body = await wait_state(client, "p1", "qr_ready")  # the QR stays valid meanwhile
    assert status_body["has_qr"] is True
    engine.clients["p1"].expire_qr()
    body = await wait_state(client, "p1", "disconnected")
    assert "pairing code" in body["last_error"] and "expired" in body["last_error"]

    # Typed on the phone: it pairs like a scan.
    assert (await call(client, "post", "/pair-code", json={"session_id": "p1", "number": OWN_PHONE}))[
        0
    ] == 200
    engine.clients["p1"].scan(OWN_PHONE)
    await wait_state(client, "p1", "connected")
    status, body = await call(client, "post", "/pair-code", json={"session_id": "p1", "number": OWN_PHONE})
    assert status == 400 and "already linked" in body["error"]
    status, body = await call(client, "post", "/pair-code", json={"session_id": "p2", "number": "12"})
    assert status == 400 and "number" in body["error"]


async def test_a_deleted_sessions_messages_leave_the_index(client, engine, message_index):
    await connected(client, engine, "gone")
    await engine.clients["gone"].incoming(CONTACT, "hello", message_id="D1")
    await indexed(message_index, "gone", "D1")
    assert (await call(client, "delete", "/sessions/gone"))[0] == 200
    assert await message_index.get("gone", "D1") is None
