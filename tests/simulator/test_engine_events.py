"""The real engine's activity, against the simulator: what contacts do reaches the activity sink,
normalised (phone numbers, not LIDs), straight from the worker processes."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from tests.simulator.engine_harness import Device, pair, pool_on
from tests.wasim import Simulator, waproto
from waservice.engine.pool import WorkerPool
from waservice.events.model import Activity, iso_utc

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

PHONE = "15550001111"
CAROL = "15557770000"
DAVE = "15558880000"


class Sink:
    """The activity sink, read into a list with each item's arrival time."""

    def __init__(self) -> None:
        self.send, self._receive = trio.open_memory_channel[Activity](0)
        self.items: list[Activity] = []
        self.arrived: list[float] = []  # time.time() as each arrived
        self._changed = trio.Event()

    async def run(self) -> None:
        import time

        async for activity in self._receive:
            self.items.append(activity)
            self.arrived.append(time.time())
            self._changed.set()
            self._changed = trio.Event()

    async def wait(self, match: Callable[[Activity], bool], timeout: float = 30) -> Activity:
        with trio.fail_after(timeout):
            while True:
                found = next((a for a in self.items if match(a)), None)
                if found is not None:
                    return found
                await self._changed.wait()

    def of(self, type: str) -> list[Activity]:
        return [a for a in self.items if a.type == type]


@contextlib.asynccontextmanager
async def paired(
    sim: Simulator, patched_dir: Path, tmp_path: Path, **config: object
) -> AsyncIterator[tuple[WorkerPool, Device, Sink]]:
    sink = Sink()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        async with pool_on(patched_dir, sink.send, **config) as pool, trio.open_nursery() as devices:
            device = Device(pool, "s1", tmp_path / "s1")
            await devices.start(device.run)
            await pair(sim, device, PHONE)
            await sim.wait_connected(PHONE)
            yield pool, device, sink
            devices.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


async def test_contact_text_reaches_the_sink_with_the_phone_number(
    sim: Simulator, patched_dir: Path, tmp_path: Path
) -> None:
    async with paired(sim, patched_dir, tmp_path, workers=1) as (_, _, sink):
        carol = sim.contact(CAROL, push_name="Carol")
        msg_id = await sim.send_message(PHONE, carol, waproto.text("hello device"))
        activity = await sink.wait(lambda a: a.key == msg_id)
        assert activity.type == "message.received" and activity.session_id == "s1"
        data = activity.data
        assert data["from"] == data["chat"] == CAROL  # not the LID it came from
        assert data["from_jid"] == data["chat_jid"] == f"{carol.lid}@lid"
        assert data["text"] == "hello device" and data["kind"] == "text" and data["push_name"] == "Carol"
        assert data["from_me"] is False and data["is_group"] is False
        assert activity.received <= activity.timestamp + 5 and activity.received >= activity.timestamp - 5

        delivery = await sim.wait_acked(PHONE, msg_id)
        # Forced active: WhatsApp hears "delivered", not "inactive" (whatsmeow's default here).
        assert delivery.receipt in ("", None), delivery

        reply = waproto.extended_text("and a reply", reply_to=msg_id, quoted_sender=f"{PHONE}@s.whatsapp.net")
        reply_id = await sim.send_message(PHONE, carol, reply)
        assert (await sink.wait(lambda a: a.key == reply_id)).data["quoted_message_id"] == msg_id
        edit_id = await sim.send_message(
            PHONE, carol, waproto.edit(f"{carol.lid}@lid", msg_id, "hello again")
        )
        edited = await sink.wait(lambda a: a.key == edit_id)
        assert edited.type == "message.edited" and edited.data["message_id"] == msg_id
        assert edited.data["text"] == "hello again" and edited.data["from"] == CAROL


async def test_receipts_and_typing(sim: Simulator, patched_dir: Path, tmp_path: Path) -> None:
    async with paired(sim, patched_dir, tmp_path, workers=1) as (_, device, sink):
        carol = sim.contact(CAROL)
        msg_id = await sim.send_message(PHONE, carol, waproto.text("hi"))  # the device learns Carol's LID
        await sink.wait(lambda a: a.key == msg_id)

        sent = await device.send_text(CAROL, "read me")
        assert sim.send_receipt(PHONE, carol, sent.id) == 1
        assert sim.send_receipt(PHONE, carol, sent.id, type="read") == 1
        read = await sink.wait(lambda a: a.type == "message.ack" and a.data["status"] == "read")
        delivered = await sink.wait(lambda a: a.type == "message.ack" and a.data["status"] == "delivered")
        for ack in (delivered, read):
            assert ack.data["message_id"] == sent.id
            assert ack.data["from"] == ack.data["chat"] == CAROL  # receipts carry only the LID
        assert read.key == f"{sent.id}:read:{CAROL}"

        assert sim.send_chatstate(PHONE, carol, "composing") == 1
        typing = await sink.wait(lambda a: a.type == "chat.typing")
        assert typing.data["from"] == CAROL and typing.data["state"] == "composing"
        assert sim.send_chatstate(PHONE, carol, "composing", media="audio") == 1
        await sink.wait(lambda a: a.type == "chat.typing" and a.data["state"] == "recording")

        # Dave never wrote: his LID is not in the device's book, so whatsmeow's store is asked.
        dave = sim.contact(DAVE)
        sent = await device.send_text(DAVE, "hello dave")
        assert sim.send_receipt(PHONE, dave, sent.id, type="read") == 1
        ack = await sink.wait(lambda a: a.type == "message.ack" and a.data["message_id"] == sent.id)
        assert ack.data["from_jid"] == f"{dave.lid}@lid"
        assert ack.data["from"] == DAVE


async def test_every_kind_presence_and_call(sim: Simulator, patched_dir: Path, tmp_path: Path) -> None:
    async with paired(sim, patched_dir, tmp_path, workers=1) as (_, _, sink):
        carol = sim.contact(CAROL)
        chat = f"{carol.lid}@lid"
        first = await sim.send_message(PHONE, carol, waproto.text("original"))
        bodies = {
            "image": waproto.image(caption="a cat", data=b"jpeg bytes"),
            "video": waproto.video(caption="clip", seconds=7, length=5000),
            "voice": waproto.audio(ptt=True, seconds=3, length=900),
            "document": waproto.document("report.pdf", caption="see attached", length=12345),
            "sticker": waproto.sticker(length=77),
            "location": waproto.location(52.52, 13.405, name="Berlin", address="Mitte"),
            "contact": waproto.contact_card("Dave", DAVE),
            "reaction": waproto.reaction(f"{PHONE}@s.whatsapp.net", "MYMSG1", "👍", from_me=False),
            "revoke": waproto.revoke(chat, first),
        }
        ids = {kind: await sim.send_message(PHONE, carol, body) for kind, body in bodies.items()}
        got = {kind: await sink.wait(lambda a, i=msg_id: a.key == i) for kind, msg_id in ids.items()}

        for kind in ("image", "video", "voice", "document", "sticker", "location", "contact"):
            assert got[kind].type == "message.received" and got[kind].data["kind"] == kind
            assert got[kind].data["from"] == CAROL
        image = got["image"].data
        assert image["text"] == "a cat"
        assert image["media"] == {
            "mimetype": "image/jpeg",
            "size": 10,
            "file_name": None,
            "sha256": hashlib.sha256(b"jpeg bytes").hexdigest(),
            "seconds": None,
        }
        assert got["video"].data["media"]["seconds"] == 7 and got["voice"].data["media"]["seconds"] == 3
        document = got["document"].data
        assert (document["text"], document["media"]["file_name"], document["media"]["size"]) == (
            "see attached",
            "report.pdf",
            12345,
        )
        assert got["location"].data["location"] == {
            "lat": 52.52,
            "lng": 13.405,
            "name": "Berlin",
            "address": "Mitte",
        }
        assert got["contact"].data["contact"]["name"] == "Dave"
        assert f"waid={DAVE}" in got["contact"].data["contact"]["vcard"]
        reaction = got["reaction"]
        assert reaction.type == "message.reaction"
        assert (reaction.data["message_id"], reaction.data["emoji"]) == ("MYMSG1", "👍")
        revoke = got["revoke"]
        assert revoke.type == "message.deleted" and revoke.data["message_id"] == first

        # Presence and calls reach only live devices: wait until each one arrived.
        seen = 1_800_000_000
        assert sim.send_presence(PHONE, carol, available=False, last_seen=seen) == 1
        presence = await sink.wait(lambda a: a.type == "presence")
        assert presence.data == {
            "from": CAROL,
            "from_jid": f"{CAROL}@s.whatsapp.net",
            "available": False,
            "last_seen": iso_utc(seen),
        }
        call_id = sim.send_call_offer(PHONE, carol)
        call = await sink.wait(lambda a: a.type == "call.received")
        assert (
            call.data["call_id"] == call_id and call.data["from"] == CAROL and call.key == f"call:{call_id}"
        )


async def test_two_sessions_talking_through_the_relay(
    sim: Simulator, patched_dir: Path, tmp_path: Path
) -> None:
    """Real whatsmeow at both ends: one session's text is the other's message.received, and its
    delivery receipt comes back as message.ack; a second device of the sender sees it as from_me."""
    other = "15550002222"
    async with (
        paired(sim, patched_dir, tmp_path, workers=2) as (pool, s1, sink),
        trio.open_nursery() as nursery,
    ):
        s2 = Device(pool, "s2", tmp_path / "s2")
        await nursery.start(s2.run)
        await pair(sim, s2, other)
        twin = Device(pool, "s3", tmp_path / "s3")  # a second linked device of s1's phone
        await nursery.start(twin.run)
        await pair(sim, twin, PHONE)
        await sim.wait_connected(other)

        sent = (await s1.send_text(other, "hi s2")).id
        got = await sink.wait(lambda a: a.session_id == "s2" and a.key == sent)
        assert got.type == "message.received" and got.data["text"] == "hi s2"
        assert got.data["from"] == got.data["chat"] == PHONE and got.data["from_me"] is False
        ack = await sink.wait(lambda a: a.session_id == "s1" and a.type == "message.ack")
        assert ack.data["message_id"] == sent and ack.data["status"] == "delivered"
        assert ack.data["from"] == other
        echo = await sink.wait(lambda a: a.session_id == "s3" and a.key == sent)
        assert echo.data["from_me"] is True and echo.data["chat"] == other and echo.data["from"] == PHONE
        nursery.cancel_scope.cancel()
