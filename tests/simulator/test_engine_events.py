"""The real engine's activity, against the simulator: what contacts do reaches the activity sink,
normalised (phone numbers, not LIDs), straight from the worker processes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from tests.simulator.engine_harness import Device, pair, pool_on
from tests.wasim import Simulator, waproto
from waservice.engine.pool import WorkerPool
from waservice.events.model import Activity

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

        sent = await device.client.send_text(CAROL, "read me")
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
        sent = await device.client.send_text(DAVE, "hello dave")
        assert sim.send_receipt(PHONE, dave, sent.id, type="read") == 1
        ack = await sink.wait(lambda a: a.type == "message.ack" and a.data["message_id"] == sent.id)
        assert ack.data["from_jid"] == f"{dave.lid}@lid"
        assert ack.data["from"] == DAVE
