"""Frames between the API process and engine workers: length-prefixed msgpack, tagged structs."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from waservice.engine import content as c
from waservice.engine import protocol as p
from waservice.events.model import Activity

MESSAGES: list[p.Message] = [
    p.Start("s1", 3, "/data/s1/whatsmeow.db"),
    p.Start("s1", 4, "postgresql://db/ws?sslmode=prefer", jid="15550001111:7@s.whatsapp.net"),
    p.Start("s1", 5, "postgresql://db/ws?sslmode=prefer", new_device=True),
    p.Stop("s1", 3),
    p.Send(7, "s1", 3, "15550001111@s.whatsapp.net", c.Text(text="héllo ✓")),
    p.Send(7, "s1", 3, "1203@g.us", c.Media(kind="image", path="/spool/1", mimetype="image/png", size=3)),
    p.Send(7, "s1", 3, "1@s.whatsapp.net", c.Revoke(message_id="3EB0", sender="1@s.whatsapp.net")),
    p.CheckNumbers(10, "s1", 3, ["15550001111"]),
    p.PairCode(11, "s1", 3, "15550001111"),
    p.MarkRead(12, "s1", 3, "1@s.whatsapp.net", "1@s.whatsapp.net", ["A", "B"]),
    p.Typing(13, "s1", 3, "1@s.whatsapp.net", "composing"),
    p.Download(14, "s1", 3, c.Attachment(message=b"\x01\x02"), "/cache/x"),
    p.Logout(8, "s1", 3),
    p.Ping(9),
    p.Shutdown(),
    p.Ready(1234),
    p.Event("s1", 3, p.Qr("2@abc,def")),
    p.Event("s1", 3, p.Connected(None)),
    p.Event("s1", 3, p.Paired("15550001111", "15550001111:7@s.whatsapp.net")),
    p.Event("s1", 3, p.Replaced("another client")),
    p.AttemptOver("s1", 3, "stopped"),
    p.Reply(7, sent=p.Sent("3EB0ABC", 1_700_000_000)),
    p.Reply(8, error="not connected"),
    p.Reply(10, checks=[c.NumberCheck(number="1555", on_whatsapp=True, jid="1@lid")]),
    p.Reply(11, code="ABCD-EFGH"),
    p.Reply(14, downloaded=c.Downloaded(path="/cache/x", size=2)),
    p.Pong(9, devices=2, abandoned=1),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: p.Message) -> None:
    assert p.FrameDecoder().feed(p.encode(message)) == [message]


def test_frame_is_length_prefixed() -> None:
    frame = p.encode(p.Ping(1))
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4


def test_decoder_reassembles_frames_split_anywhere() -> None:
    data = b"".join(p.encode(m) for m in MESSAGES)
    decoder = p.FrameDecoder()
    out: list[p.Message] = []
    for i in range(0, len(data), 3):  # 3-byte pieces split every frame and every prefix
        out += decoder.feed(data[i : i + 3])
    assert out == MESSAGES and decoder.pending == 0


def test_oversized_or_garbage_frames_are_protocol_errors() -> None:
    with pytest.raises(p.ProtocolError):
        p.FrameDecoder().feed((p.MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(p.ProtocolError):
        p.FrameDecoder().feed((3).to_bytes(4, "big") + b"\xc1\xc1\xc1")


async def test_frame_stream_over_a_socketpair_with_concurrent_writers() -> None:
    a, b = trio.testing.memory_stream_pair()
    left, right = p.FrameStream(a), p.FrameStream(b)
    sent = [p.Ping(i) for i in range(50)]
    async with trio.open_nursery() as nursery:
        for message in sent:  # many writers at once: the stream's lock keeps frames whole
            nursery.start_soon(left.send, message)
    received = [await right.receive() for _ in sent]
    assert sorted(received, key=lambda m: m.req) == sent  # type: ignore[union-attr]
    await a.aclose()
    assert await right.receive() is None


class _GatedStream(trio.abc.SendStream):
    """Counts writes; each write waits until the gate is open."""

    def __init__(self, inner: trio.abc.SendStream) -> None:
        self.inner = inner
        self.writes = 0
        self.gate = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        await self.gate.wait()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_frames_queued_during_a_write_go_out_together_even_if_their_senders_are_cancelled() -> None:
    a, b = trio.testing.memory_stream_pair()
    gated = _GatedStream(a)
    left, right = p.FrameStream(gated), p.FrameStream(b)  # type: ignore[arg-type]
    scopes: list[trio.CancelScope] = []

    async def give_up(i: int) -> None:
        with trio.CancelScope() as scope:
            scopes.append(scope)
            await left.send(p.Ping(i))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.send, p.Ping(0))  # takes the stream; its write waits at the gate
        await trio.testing.wait_all_tasks_blocked()
        for i in range(1, 40):  # queued behind it, then their senders give up
            nursery.start_soon(give_up, i)
        await trio.testing.wait_all_tasks_blocked()
        for scope in scopes:
            scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            await left.send(p.Ping(99))  # cancelled before it queued: never sent
        gated.gate.set()
    # One write for the first frame, one for the 39 queued behind it: each frame whole.
    assert gated.writes == 2
    received = [await right.receive() for _ in range(40)]
    assert sorted(received, key=lambda m: m.req) == [p.Ping(i) for i in range(40)]  # type: ignore[union-attr]
    await a.aclose()
    assert await right.receive() is None


async def test_every_sender_of_a_batch_hears_that_the_stream_broke() -> None:
    a, b = trio.testing.memory_stream_pair()
    gated = _GatedStream(a)
    left = p.FrameStream(gated)  # type: ignore[arg-type]
    failures = []

    async def send(i: int) -> None:
        try:
            await left.send(p.Ping(i))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            failures.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, 0)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(1, 5):
            nursery.start_soon(send, i)
        await trio.testing.wait_all_tasks_blocked()
        await b.aclose()  # the reader is gone: the queued batch's write fails
        gated.gate.set()
    assert len(failures) == 5


def test_activity_frames_carry_the_shared_model() -> None:
    activity = Activity(
        session_id="s1",
        type="message.received",
        timestamp=1_700_000_000.5,
        data={"message_id": "3EB0", "text": "héllo", "media": None, "from": "15550001111"},
        key="3EB0",
        received=1_700_000_000.7,
    )
    frame = p.encode(p.Happened(activity))
    assert p.FrameDecoder().feed(frame) == [p.Happened(activity)]
