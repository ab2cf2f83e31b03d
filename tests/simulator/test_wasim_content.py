"""What a real neonize device sends, decoded by the simulator for the recipient: each message kind's
fields (``ReceivedMessage.content``), and the number check for known and unknown numbers."""

from __future__ import annotations

import ast
import re

import pytest
from google.protobuf import descriptor_pb2

from tests.simulator.conftest import StartClient
from tests.simulator.test_neonize_e2e import PHONE, pair
from tests.wasim import Simulator, waproto
from tests.wasim.patch import installed_neonize_dir

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

CONTACT = "15557770000"


async def test_each_kind_is_decoded_for_the_recipient(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await pair(sim, client)
    me = f"{PHONE}@s.whatsapp.net"

    first = await client.send_text(CONTACT, "original")
    assert first["event"] == "send_result", first
    text = await sim.wait_message(id=first["id"], kind="extended_text")
    assert text.content is not None and text.content.text == "original"

    async def send(kind: str, **fields: object):
        result = await client.send_content(CONTACT, kind, **fields)
        assert result["event"] == "send_result", result
        message = await sim.wait_message(to=CONTACT, id=result["id"])
        assert message.content is not None, message
        return message.content

    reply = await send("reply", text="answer", reply_to=first["id"], quoted_sender=me, quoted_text="original")
    assert reply.kind == "extended_text" and reply.text == "answer"
    assert reply.context is not None
    assert (reply.context.stanza_id, reply.context.participant) == (first["id"], me)
    assert reply.context.quoted_text == "original"

    location = await send("location", latitude=52.52, longitude=-13.405, name="Here", address="Street 1")
    assert location.kind == "location" and location.location is not None
    assert (location.location.latitude, location.location.longitude) == (52.52, -13.405)
    assert (location.location.name, location.location.address) == ("Here", "Street 1")

    card = await send("contact", name="Dora", phone="15551234567")
    assert card.kind == "contact" and card.contact is not None
    assert card.contact.display_name == "Dora"
    assert card.contact.vcard is not None and "15551234567" in card.contact.vcard

    reaction = await send("reaction", message_id=first["id"], emoji="👍")
    assert reaction.kind == "reaction" and reaction.reaction == "👍"
    assert reaction.key is not None and (reaction.key.id, reaction.key.from_me) == (first["id"], True)

    edit = await send("edit", message_id=first["id"], text="edited")
    assert edit.kind == "edit" and edit.text == "edited"
    assert edit.key is not None and edit.key.id == first["id"]

    revoke = await send("revoke", message_id=first["id"])
    assert revoke.kind == "revoke" and revoke.key is not None
    assert (revoke.key.id, revoke.key.from_me) == (first["id"], True)

    # The same, waited for by predicate on the decoded content.
    found = await sim.wait_message(where=lambda c: c.location is not None and c.location.name == "Here")
    assert found.kind == "location"
    assert found.as_dict()["content"]["location"]["address"] == "Street 1"


async def test_number_check_known_and_unknown(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await pair(sim, client)
    known = sim.contact(CONTACT)

    await client.command(cmd="is_on_whatsapp", numbers=[CONTACT, "15550009999"])
    results = {r["Query"]: r for r in (await client.wait("is_on_whatsapp"))["results"]}
    assert results[CONTACT]["IsIn"] is True
    assert (results[CONTACT]["JID"]["User"], results[CONTACT]["JID"]["Server"]) == (known.lid, "lid")
    assert not results["15550009999"].get("IsIn", False)
    assert "15550009999" not in sim.accounts  # an unknown number stays unknown


def descriptor_fields(module: str) -> dict[str, dict[str, int]]:
    """``{"Message.Nested": {field name: number}}`` from a neonize ``_pb2.py``'s serialized descriptor,
    read from the file (importing it would load neonize's Go library)."""
    source = (installed_neonize_dir() / "proto" / module).read_text()
    match = re.search(r"AddSerializedFile\((b'.*?')\)", source, re.S)
    assert match is not None, module
    descriptor = descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(match.group(1)))
    found: dict[str, dict[str, int]] = {}

    def walk(messages, prefix: str) -> None:
        for message in messages:
            found[prefix + message.name] = {f.name: f.number for f in message.field}
            walk(message.nested_type, f"{prefix}{message.name}.")

    walk(descriptor.message_type, "")
    return found


async def test_field_numbers_match_neonize_descriptors() -> None:
    e2e = descriptor_fields("waE2E/WAWebProtobufsE2E_pb2.py")
    kinds = {"image": "imageMessage", "video": "videoMessage", "audio": "audioMessage"}
    kinds |= {"document": "documentMessage", "sticker": "stickerMessage"}
    for kind, field in kinds.items():
        assert e2e["Message"][field] == waproto.MEDIA_MESSAGE[kind]
        numbers = waproto.MEDIA_FIELDS[kind]
        fields = e2e[field[0].upper() + field[1:]]
        expected = ["URL", "mimetype", "fileSHA256", "fileLength", "mediaKey", "fileEncSHA256", "directPath"]
        assert [fields[name] for name in expected] == list(numbers[:7]), kind
        assert fields.get("caption") == numbers.caption, kind
    assert (e2e["DocumentMessage"]["title"], e2e["DocumentMessage"]["fileName"]) == (3, 8)
    assert (e2e["AudioMessage"]["PTT"], e2e["AudioMessage"]["seconds"]) == (6, 5)
    message = e2e["Message"]
    assert [message[n] for n in ("conversation", "extendedTextMessage", "locationMessage")] == [1, 6, 5]
    assert [message[n] for n in ("contactMessage", "protocolMessage", "reactionMessage")] == [4, 12, 46]
    assert [message[n] for n in ("deviceSentMessage", "editedMessage", "documentWithCaptionMessage")] == [
        31,
        58,
        53,
    ]
    context = e2e["ContextInfo"]
    assert [context[n] for n in ("stanzaID", "participant", "quotedMessage", "remoteJID")] == [1, 2, 3, 4]
    assert e2e["ExtendedTextMessage"]["contextInfo"] == waproto.CONTEXT_INFO
    location = e2e["LocationMessage"]
    assert [location[n] for n in ("degreesLatitude", "degreesLongitude", "name", "address")] == [1, 2, 3, 4]
    assert (e2e["ContactMessage"]["displayName"], e2e["ContactMessage"]["vcard"]) == (1, 16)
    assert (e2e["ReactionMessage"]["key"], e2e["ReactionMessage"]["text"]) == (1, 2)
    protocol = e2e["ProtocolMessage"]
    assert [protocol[n] for n in ("key", "type", "editedMessage")] == [1, 2, 14]
    key = descriptor_fields("waCommon/WACommon_pb2.py")["MessageKey"]
    assert [key[n] for n in ("remoteJID", "fromMe", "ID", "participant")] == [1, 2, 3, 4]


async def test_device_typing_is_recorded(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await pair(sim, client)
    mark = len(sim.history)

    await client.command(cmd="chat_presence", to=CONTACT, state="composing", media="audio")
    typing = await sim.wait_event("device_chatstate", after=mark, phone=PHONE, to=CONTACT)
    assert (typing["state"], typing["media"]) == ("composing", "audio")
    await client.command(cmd="chat_presence", to=CONTACT, state="paused", media="text")
    paused = await sim.wait_event("device_chatstate", after=mark, state="paused")
    assert (paused["to"], paused["media"]) == (CONTACT, None)


async def test_device_read_receipt_is_recorded(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await pair(sim, client)
    msg_id = await sim.send_message(PHONE, CONTACT, waproto.text("read me"))
    event = await client.wait("message", where=lambda e: e["data"]["Info"]["ID"] == msg_id)
    await sim.wait_acked(PHONE, msg_id)
    mark = len(sim.history)

    source = event["data"]["Info"]["MessageSource"]
    await client.command(cmd="mark_read", ids=[msg_id], chat=source["Chat"], sender=source["Sender"])
    read = await sim.wait_event("device_receipt", after=mark, phone=PHONE, type="read")
    assert read["ids"] == [msg_id]
