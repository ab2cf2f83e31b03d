"""The real engine's messaging, against the simulator: each kind of content a session sends arrives
decrypted at the recipient with the right fields; number checks, read receipts, typing; bad
requests are clean errors that leave the session connected."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

from tests.simulator.engine_harness import Device, pair, pool_on
from tests.simulator.test_engine_events import PHONE, paired
from tests.wasim import Simulator, waproto
from tests.wasim.tls import tls_env
from waservice.engine import Connected, EngineError, Paired, QrCode
from waservice.engine.content import (
    Attachment,
    ContactCard,
    Edit,
    Location,
    Media,
    Quote,
    Reaction,
    Revoke,
    Text,
)

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
        with pytest.raises(EngineError, match="not a JID"):
            await client.send(CAROL, Text(text="no server"))
        with pytest.raises(EngineError, match="without spaces"):
            await client.mark_read(TO_CAROL, "", ["a b"])

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


def spool(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


async def test_media_is_uploaded_and_a_contacts_media_downloads(
    sim: Simulator, patched_dir: Path, tmp_path: Path
) -> None:
    """Uploads go to the simulator's HTTPS media host (its CA given to the workers at start); the
    recipient fetches and decrypts each file, hashes checked."""
    async with paired(sim, patched_dir, tmp_path, workers=1, env=tls_env()) as (_, device, sink):
        client = device.client
        first = await client.send(TO_CAROL, Text(text="a picture follows"))
        image = os.urandom(300_000) + b"\x00 with NULs \x00"
        sent = await client.send(
            TO_CAROL,
            Media(
                kind="image",
                path=spool(tmp_path, "image", image),
                mimetype="image/jpeg",
                size=len(image),
                caption="a cat",
                reply_to=Quote(id=first.id, sender=ME, text="a picture follows"),
            ),
        )
        message = await sim.wait_message(to=CAROL, id=sent.id, kind="image")
        assert message.content is not None and message.content.media is not None
        media = message.content.media
        assert (media.caption, media.mimetype, media.file_length) == ("a cat", "image/jpeg", len(image))
        assert media.file_sha256 == hashlib.sha256(image).digest()
        assert message.content.context is not None and message.content.context.stanza_id == first.id
        assert sim.fetch_media(message) == image

        pdf = b"%PDF-1.4 a report"
        sent = await client.send(
            TO_CAROL,
            Media(
                kind="document",
                path=spool(tmp_path, "pdf", pdf),
                mimetype="application/pdf",
                size=len(pdf),
                file_name="q3 report.pdf",
            ),
        )
        document = await sim.wait_message(to=CAROL, id=sent.id, kind="document")
        assert document.content is not None and document.content.media is not None
        assert document.content.media.file_name == document.content.media.title == "q3 report.pdf"
        assert document.content.media.mimetype == "application/pdf"
        assert sim.fetch_media(document) == pdf

        for kind, decoded in (
            ("voice", "audio"),
            ("audio", "audio"),
            ("video", "video"),
            ("sticker", "sticker"),
        ):
            data = os.urandom(5000)
            mimetype = {"voice": "audio/ogg; codecs=opus", "sticker": "image/webp"}.get(
                kind, f"{decoded}/mp4"
            )
            media_content = Media(
                kind=kind, path=spool(tmp_path, kind, data), mimetype=mimetype, size=len(data)
            )  # type: ignore[arg-type]
            sent = await client.send(TO_CAROL, media_content)
            got = await sim.wait_message(to=CAROL, id=sent.id, kind=decoded)
            assert got.content is not None and got.content.media is not None
            assert got.content.media.mimetype == mimetype and got.content.media.ptt is (kind == "voice")
            assert sim.fetch_media(got) == data

        # A contact's image: the activity keeps what download needs, privately.
        carol = sim.contact(CAROL)
        photo = os.urandom(120_000)
        msg_id = await sim.send_media(PHONE, carol, "image", photo, "image/png", caption="from carol")
        received = await sink.wait(lambda a: a.key == msg_id)
        assert received.data["kind"] == "image" and received.attachment is not None
        out = tmp_path / "downloaded"
        downloaded = await client.download(
            Attachment(message=received.attachment, mimetype="image/png"), str(out)
        )
        assert (downloaded.path, downloaded.size) == (str(out), len(photo))
        assert out.read_bytes() == photo

        with pytest.raises(EngineError, match="download failed"):
            await client.download(Attachment(message=b"\x1a\x00"), str(tmp_path / "nothing"))
        assert device.connected


async def test_a_pairing_code_links_without_a_qr_scan(
    sim: Simulator, patched_dir: Path, tmp_path: Path
) -> None:
    phone = "15550003333"
    async with pool_on(patched_dir, workers=1) as pool, trio.open_nursery() as nursery:
        device = Device(pool, "s1", tmp_path / "s1")
        await nursery.start(device.run)
        await device.wait(QrCode)
        code = await device.client.pair_code(phone)
        assert len(code) == 9 and code[4] == "-", code
        await sim.wait_pair_code_request(phone)
        await sim.enter_pair_code(phone, code)
        await device.wait(Connected)
        await sim.wait_connected(phone)
        assert not sim.events("scanned") and sim.events("code_paired")
        assert device.count(Paired) == 1

        with pytest.raises(EngineError, match="already linked"):
            await device.client.pair_code(phone)
        sent = await device.client.send(TO_CAROL, Text(text="linked by code"))
        assert (await sim.wait_message(to=CAROL, id=sent.id)).text == "linked by code"
        nursery.cancel_scope.cancel()
