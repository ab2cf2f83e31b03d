"""What a real neonize device sends, decoded by the simulator for the recipient: each message kind's
fields (``ReceivedMessage.content``), and the number check for known and unknown numbers."""

from __future__ import annotations

import pytest

from tests.simulator.conftest import StartClient
from tests.simulator.test_neonize_e2e import PHONE, pair
from tests.wasim import Simulator

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
