"""Simulated contacts writing to a real neonize device: messages of every kind, receipts, typing,
presence, calls, and the offline queue."""

from __future__ import annotations

import pytest

from tests.simulator.clients import RawClient
from tests.simulator.conftest import StartClient
from tests.simulator.test_neonize_e2e import PHONE, pair
from tests.wasim import Simulator, waproto
from tests.wasim.keys import KeyPair
from tests.wasim.signal_rx import SignalDevice
from tests.wasim.signal_tx import PreKeyBundle, SendingSession

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

CONTACT = "15557770000"


async def test_sending_chain_decrypts_on_the_receiving_side() -> None:
    """Each pkmsg of one session (same base key, counter 0, 1, 2 ...) decrypts from scratch."""
    bob = SignalDevice(identity=KeyPair.generate())
    assert bob.signed_prekey is not None
    opk_id, opk = bob.new_one_time_prekey()
    bundle = PreKeyBundle(
        bob.registration_id,
        bob.identity.pub,
        bob.signed_prekey.key_id,
        bob.signed_prekey.keys.pub,
        (opk_id, opk.pub),
    )
    alice = SendingSession(KeyPair.generate(), 1234, bundle)
    for n in range(3):
        assert bob.decrypt_pkmsg(alice.encrypt(f"m{n}".encode())) == f"m{n}".encode()
    assert alice.counter == 3


async def wait_message(client: RawClient, msg_id: str, after: int = 0) -> dict:
    event = await client.wait("message", after=after, where=lambda e: e["data"]["Info"]["ID"] == msg_id)
    return event["data"]


async def test_contact_text_arrives_and_is_receipted(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await pair(sim, client)
    contact = sim.contact(CONTACT, push_name="Carol")

    msg_id = await sim.send_message(PHONE, contact, waproto.text("hello device"))
    data = await wait_message(client, msg_id)
    assert data["Message"]["conversation"] == "hello device"
    source = data["Info"]["MessageSource"]
    assert source["Sender"]["User"] == contact.lid
    assert source["Sender"]["Server"] == "lid"
    assert source["SenderAlt"]["User"] == CONTACT
    assert not source.get("IsFromMe", False)
    assert data["Info"]["Pushname"] == "Carol"

    delivery = await sim.wait_acked(PHONE, msg_id)
    assert delivery.sent_at is not None and delivery.acked_at is not None
    assert delivery.acked_at >= delivery.sent_at
    assert delivery.attempts == 1

    # Later messages ride the same session (one chain step each) and still decrypt.
    ids = [await sim.send_message(PHONE, CONTACT, waproto.text(f"n{i}")) for i in range(5)]
    for i, later in enumerate(ids):
        assert (await wait_message(client, later))["Message"]["conversation"] == f"n{i}"
    assert not client.named("undecryptable")


async def test_every_message_kind_decodes_in_message_ev(sim: Simulator, start_client: StartClient) -> None:
    """Each waproto builder's fields, as the device's MessageEv reports them."""
    client = await start_client("a")
    await pair(sim, client)
    me = f"{PHONE}@s.whatsapp.net"
    chat = f"{sim.contact(CONTACT).lid}@lid"
    first = await sim.send_message(PHONE, CONTACT, waproto.text("original"))
    sent = {
        "reply": waproto.extended_text("answer", reply_to="ABC123", quoted_sender=me, quoted_text="question"),
        "image": waproto.image(caption="a cat", data=b"jpeg bytes"),
        "video": waproto.video(caption="clip", seconds=7, length=5000),
        "voice": waproto.audio(ptt=True, seconds=3, length=900),
        "document": waproto.document("report.pdf", caption="see attached", length=12345),
        "sticker": waproto.sticker(length=77),
        "location": waproto.location(52.52, 13.405, name="Berlin", address="Mitte"),
        "contact": waproto.contact_card("Dave", "15553334444"),
        "reaction": waproto.reaction(me, "MYMSG1", "👍", from_me=False),
        "edit": waproto.edit(chat, first, "edited"),
        "revoke": waproto.revoke(chat, first),
    }
    ids = {kind: await sim.send_message(PHONE, CONTACT, body) for kind, body in sent.items()}
    got = {kind: await wait_message(client, msg_id) for kind, msg_id in ids.items()}

    reply = got["reply"]["Message"]["extendedTextMessage"]
    assert reply["text"] == "answer"
    assert reply["contextInfo"]["stanzaID"] == "ABC123"
    assert reply["contextInfo"]["participant"] == me
    assert reply["contextInfo"]["quotedMessage"]["conversation"] == "question"

    image = got["image"]["Message"]["imageMessage"]
    assert (image["mimetype"], image["caption"], image["fileLength"]) == ("image/jpeg", "a cat", "10")
    assert image["URL"].startswith("https://") and image["fileSHA256"]
    assert got["image"]["Info"]["Type"] == "media"
    assert got["image"]["Info"]["MediaType"] == "image"
    video = got["video"]["Message"]["videoMessage"]
    assert (video["caption"], video["seconds"], video["fileLength"]) == ("clip", 7, "5000")
    voice = got["voice"]["Message"]["audioMessage"]
    assert (voice["PTT"], voice["seconds"], voice["mimetype"]) == (True, 3, "audio/ogg; codecs=opus")
    document = got["document"]["Message"]["documentMessage"]
    assert (document["fileName"], document["caption"], document["fileLength"]) == (
        "report.pdf",
        "see attached",
        "12345",
    )
    assert got["sticker"]["Message"]["stickerMessage"]["mimetype"] == "image/webp"
    place = got["location"]["Message"]["locationMessage"]
    assert (place["degreesLatitude"], place["degreesLongitude"], place["name"]) == (52.52, 13.405, "Berlin")
    card = got["contact"]["Message"]["contactMessage"]
    assert card["displayName"] == "Dave" and "waid=15553334444" in card["vcard"]
    reaction = got["reaction"]["Message"]["reactionMessage"]
    assert (reaction["text"], reaction["key"]["ID"]) == ("👍", "MYMSG1")
    assert not reaction["key"].get("fromMe", False)

    edit = got["edit"]
    protocol = edit["Message"]["protocolMessage"]
    assert protocol["type"] == "MESSAGE_EDIT"
    assert protocol["key"]["ID"] == first
    assert protocol["editedMessage"]["conversation"] == "edited"
    assert edit["Info"]["Edit"] == "1"
    revoke = got["revoke"]["Message"]["protocolMessage"]
    assert (revoke["type"], revoke["key"]["ID"]) == ("REVOKE", first)
    assert got["revoke"]["Info"]["Edit"] == "7"


async def test_receipts_typing_presence_and_call(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await pair(sim, client)
    one = await client.send_text(CONTACT, "first")
    two = await client.send_text(CONTACT, "second")
    lid = sim.contact(CONTACT).lid

    assert sim.send_receipt(PHONE, CONTACT, one["id"]) == 1
    delivered = (await client.wait("receipt"))["data"]
    assert delivered["MessageIDs"] == [one["id"]]
    assert delivered["MessageSource"]["Sender"]["User"] == lid
    assert delivered.get("Type", "DELIVERED") == "DELIVERED"

    mark = len(client.events)
    sim.send_receipt(PHONE, CONTACT, [one["id"], two["id"]], type="read")
    read = (await client.wait("receipt", after=mark))["data"]
    assert (read["MessageIDs"], read["Type"]) == ([one["id"], two["id"]], "READ")

    sim.send_chatstate(PHONE, CONTACT, "composing", media="audio")
    typing = (await client.wait("chat_presence"))["data"]
    assert (typing["State"], typing["Media"]) == ("COMPOSING", "AUDIO")
    assert typing["MessageSource"]["Chat"]["User"] == lid

    sim.send_presence(PHONE, CONTACT, available=False, last_seen=1_700_000_000)
    presence = (await client.wait("presence"))["data"]
    assert presence["From"]["User"] == CONTACT
    assert presence["Unavailable"] is True
    assert int(presence["LastSeen"]) == 1_700_000_000

    call_id = sim.send_call_offer(PHONE, CONTACT)
    offer = (await client.wait("call_offer"))["data"]
    meta = offer["basicCallMeta"]
    assert meta["callID"] == call_id
    assert (meta["callCreator"]["User"], meta["callCreatorAlt"]["User"]) == (lid, CONTACT)


async def test_offline_queue_delivers_once_at_next_login(sim: Simulator, start_client: StartClient) -> None:
    first = await start_client("a")
    await pair(sim, first)
    await first.exit()
    await sim.wait_disconnected(PHONE)

    ids = [await sim.send_message(PHONE, CONTACT, waproto.text(f"while away {i}")) for i in range(3)]
    assert all(d.sent_at is None for d in sim.delivered(PHONE))

    second = await start_client("a")
    await second.wait("connected")
    preview = await second.wait("offline_preview")
    assert int(preview["data"]["Total"]) == 3
    for i, msg_id in enumerate(ids):
        assert (await wait_message(second, msg_id))["Message"]["conversation"] == f"while away {i}"
    await second.wait("offline_completed")
    for msg_id in ids:
        delivery = await sim.wait_acked(PHONE, msg_id)
        assert delivery.attempts == 1
    # A third login has nothing left to deliver.
    await second.exit()
    await sim.wait_disconnected(PHONE)
    third = await start_client("a")
    completed = await third.wait("offline_completed")
    assert int(completed["data"].get("Count", 0)) == 0
    assert not third.named("message")


async def test_unreceipted_message_is_redelivered_and_seen_once(
    sim: Simulator, start_client: StartClient
) -> None:
    first = await start_client("a")
    await pair(sim, first)
    sim.lose_receipts({PHONE})
    msg_id = await sim.send_message(PHONE, CONTACT, waproto.text("receipt lost"))
    await wait_message(first, msg_id)
    await sim.wait_event("receipt_lost", id=msg_id)
    await first.exit()
    await sim.wait_disconnected(PHONE)
    sim.lose_receipts(set())

    second = await start_client("a")
    delivery = await sim.wait_acked(PHONE, msg_id)
    assert delivery.attempts == 2
    await second.wait("offline_completed")
    # whatsmeow had decrypted it already: "old counter", receipted again, no second MessageEv.
    assert not second.named("message")


async def test_device_answer_to_a_contact_is_read(sim: Simulator, start_client: StartClient) -> None:
    """After a contact wrote first, the device answers on that session ("msg", not "pkmsg"), and
    the simulator still reads the text."""
    client = await start_client("a")
    await pair(sim, client)
    await wait_message(client, await sim.send_message(PHONE, CONTACT, waproto.text("hello")))
    for n in range(3):
        sent = await client.send_text(CONTACT, f"answer {n}")
        assert sent["event"] == "send_result", sent
        received = await sim.wait_message(to=CONTACT, text=f"answer {n}")
        assert received.id == sent["id"] and received.error is None
    # The contact writes again on its old session; the device still reads it.
    assert (await wait_message(client, await sim.send_message(PHONE, CONTACT, waproto.text("again"))))[
        "Message"
    ]["conversation"] == "again"


async def test_message_reaches_every_device_of_the_phone(sim: Simulator, start_client: StartClient) -> None:
    first = await start_client("a")
    await pair(sim, first)
    second = await start_client("b")
    qr = await second.wait("qr")
    sim.scan_qr(qr["qr"], PHONE)
    await second.wait("connected")
    assert sim.phone_state(PHONE)["devices"] == [7, 8]

    msg_id = await sim.send_message(PHONE, CONTACT, waproto.text("to both"))
    for client in (first, second):
        assert (await wait_message(client, msg_id))["Message"]["conversation"] == "to both"
    await sim.wait_for(lambda: all(d.acked_at for d in sim.delivered(PHONE)))
    assert sorted(d.device for d in sim.delivered(PHONE)) == [7, 8]
