"""The real engine's messaging, against the simulator: each kind of content a session sends arrives
decrypted at the recipient with the right fields; number checks, read receipts, typing; bad
requests are clean errors that leave the session connected."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.simulator.engine_harness import Device, pair
from tests.simulator.test_engine_events import PHONE, paired
from tests.wasim import Simulator, waproto
from waservice.engine import EngineError
from waservice.engine.content import ContactCard, Edit, Location, Media, Quote, Reaction, Revoke, Text

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

CAROL = "15557770000"
NOBODY = "15550009999"
BOB = "15550002222"
ME = f"{PHONE}@s.whatsapp.net"
TO_CAROL = f"{CAROL}@s.whatsapp.net"


async def test_each_kind_arrives_decrypted(sim: Simulator, patched_dir: Path, tmp_path: Path) -> None:
    async with paired(sim, patched_dir, tmp_path, workers=1) as (_, device, _):
        client = device.client

        async def send(content: object) -> object:
            sent = await client.send(TO_CAROL, content)  # type: ignore[arg-type]
            message = await sim.wait_message(to=CAROL, id=sent.id)
            assert message.content is not None, message
            return message.content

        first = await client.send(TO_CAROL, Text(text="original"))
        plain = (await sim.wait_message(to=CAROL, id=first.id)).content
        assert plain is not None and (plain.kind, plain.text) == ("text", "original")

        reply = await send(Text(text="answer", reply_to=Quote(id=first.id, sender=ME, text="original")))
        assert reply.kind == "extended_text" and reply.text == "answer"  # type: ignore[attr-defined]
        context = reply.context  # type: ignore[attr-defined]
        assert (context.stanza_id, context.participant, context.quoted_text) == (first.id, ME, "original")

        place = await send(Location(lat=52.52, lng=-13.405, name="Here", address="Street 1"))
        location = place.location  # type: ignore[attr-defined]
        assert (location.latitude, location.longitude, location.name, location.address) == (
            52.52,
            -13.405,
            "Here",
            "Street 1",
        )

        vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Dora\nTEL;type=CELL;waid=15551234567:+15551234567\nEND:VCARD"
        card = (await send(ContactCard(name="Dora", vcard=vcard))).contact  # type: ignore[attr-defined]
        assert (card.display_name, card.vcard) == ("Dora", vcard)

        reaction = await send(Reaction(message_id=first.id, sender=ME, from_me=True, emoji="👍"))
        assert reaction.kind == "reaction" and reaction.reaction == "👍"  # type: ignore[attr-defined]
        key = reaction.key  # type: ignore[attr-defined]
        assert (key.id, key.from_me, key.remote_jid) == (first.id, True, TO_CAROL)

        # A reaction to Carol's own message names her message, not ours.
        carol = sim.contact(CAROL)
        theirs = await sim.send_message(PHONE, carol, waproto.text("react to me"))
        reaction = await send(Reaction(message_id=theirs, sender=TO_CAROL, from_me=False, emoji="❤"))
        assert reaction.key.id == theirs and reaction.key.from_me is False  # type: ignore[attr-defined]

        edit = await send(Edit(message_id=first.id, text="edited"))
        assert edit.kind == "edit" and edit.text == "edited"  # type: ignore[attr-defined]
        assert edit.key.id == first.id and edit.key.from_me is True  # type: ignore[attr-defined]

        revoke = await send(Revoke(message_id=first.id, sender=ME))
        assert revoke.kind == "revoke"  # type: ignore[attr-defined]
        assert (revoke.key.id, revoke.key.from_me) == (first.id, True)  # type: ignore[attr-defined]


async def test_number_check_read_receipt_and_clean_errors(
    sim: Simulator, patched_dir: Path, tmp_path: Path
) -> None:
    async with paired(sim, patched_dir, tmp_path, workers=1) as (_, device, sink):
        client = device.client
        carol = sim.contact(CAROL)
        checks = await client.check_numbers([CAROL, NOBODY])
        assert [(c.number, c.on_whatsapp, c.jid) for c in checks] == [
            (CAROL, True, f"{carol.lid}@lid"),
            (NOBODY, False, None),
        ]

        msg_id = await sim.send_message(PHONE, carol, waproto.text("read me"))
        await sink.wait(lambda a: a.key == msg_id)
        after = len(sim.history)
        await client.mark_read(f"{carol.lid}@lid", f"{carol.lid}@lid", [msg_id])
        read = await sim.wait_event("device_receipt", after=after, type="read")
        assert read["ids"] == [msg_id] and read["phone"] == PHONE

        # Refused before Go (where an unknown state would end the worker process).
        with pytest.raises(EngineError, match="unknown typing state"):
            await client.set_typing(TO_CAROL, "dancing")  # type: ignore[arg-type]
        gone = Media(kind="image", path=str(tmp_path / "no-such-spool"), mimetype="image/png", size=10)
        with pytest.raises(EngineError, match="media file unreadable"):
            await client.send(TO_CAROL, gone)
        with pytest.raises(EngineError, match="digits"):
            await client.check_numbers(["1555 0001"])
        with pytest.raises(EngineError, match="already linked"):
            await client.pair_code(CAROL)

        sent = await client.send(TO_CAROL, Text(text="still here"))
        assert (await sim.wait_message(to=CAROL, id=sent.id)).text == "still here"
        assert device.connected


async def test_typing_reaches_the_other_session(sim: Simulator, patched_dir: Path, tmp_path: Path) -> None:
    """Chat states are relayed between two paired phones: whatsmeow at both ends."""
    async with (
        paired(sim, patched_dir, tmp_path, workers=1) as (pool, s1, sink),
        trio.open_nursery() as nursery,
    ):
        s2 = Device(pool, "s2", tmp_path / "s2")
        await nursery.start(s2.run)
        await pair(sim, s2, BOB)
        await sim.wait_connected(BOB)
        # s2 learns s1's LID from a message first, so its typing is reported with the number.
        hello = await s1.client.send(f"{BOB}@s.whatsapp.net", Text(text="hello"))
        await sink.wait(lambda a: a.session_id == "s2" and a.key == hello.id)

        for state in ("composing", "recording", "paused"):
            await s1.client.set_typing(f"{BOB}@s.whatsapp.net", state)  # type: ignore[arg-type]
            typing = await sink.wait(
                lambda a, s=state: a.session_id == "s2" and a.type == "chat.typing" and a.data["state"] == s
            )
            assert typing.data["from"] == PHONE
        nursery.cancel_scope.cancel()
