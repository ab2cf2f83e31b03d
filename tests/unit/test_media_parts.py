"""The pure parts behind the messaging routes: mimetype rules and sniffing, the URL guard's address
rules, the vCard, the media cache's bounds, and the message index's outbox, pruning and deletion."""

from __future__ import annotations

import ipaddress
import os
import sqlite3
import time
from pathlib import Path

import pytest
import trio

from waservice.api.vcard import contact_vcard, escape_text
from waservice.engine.content import Attachment
from waservice.errors import InvalidRequest
from waservice.events.model import MESSAGE_RECEIVED, Activity
from waservice.media.cache import MediaCache
from waservice.media.fetch import refused
from waservice.media.kinds import check_mimetype, decide_mimetype, sniff
from waservice.store.messages import IndexedMessage, MessageIndex


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("image/JPEG", "image", "image/jpeg"),
        ("audio/ogg;codecs=opus", "voice", "audio/ogg; codecs=opus"),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "document", None),
        ("image/webp", "sticker", "image/webp"),
        ("video/mp4", "video", "video/mp4"),
    ],
)
def test_good_mimetypes(value, kind, expected):
    assert check_mimetype(value, kind) == (expected or value)


@pytest.mark.parametrize(
    ("value", "kind"),
    [("image", "image"), ("image/", "image"), ("a/b/c", "document"), ("image/png\r\nX: y", "image"),
     ("video/mp4", "image"), ("image/png", "sticker"), ("audio/mpeg", "voice"),
     ("x" * 300 + "/y", "document")],
)  # fmt: skip
def test_bad_mimetypes(value, kind):
    with pytest.raises(InvalidRequest):
        check_mimetype(value, kind)


def test_sniffing():
    assert sniff(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"\x00\x00\x00\x18ftypmp42") == "video/mp4"
    assert sniff(b"\x00\x00\x00\x18ftypM4A ") == "audio/mp4"
    assert sniff(b"hello") is None
    # Nothing recognisable: the URL's label, then the file name, then octet-stream.
    assert decide_mimetype("document", None, b"hello", "notes.txt") == "text/plain"
    assert decide_mimetype("document", None, b"hello", None, "text/csv; charset=utf-8") == "text/csv"
    assert decide_mimetype("document", None, b"hello", None) == "application/octet-stream"
    with pytest.raises(InvalidRequest, match="looks like application/octet-stream"):
        decide_mimetype("image", None, b"hello", None)


@pytest.mark.parametrize(
    ("address", "why"),
    [("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.0.0.1", "private"), ("192.168.1.1", "private"),
     ("172.16.0.1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
     ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"),
     ("240.0.0.1", "reserved"), ("::ffff:10.0.0.1", "private"), ("100.64.0.1", "not globally reachable"),
     ("fc00::1", "private"), ("8.8.8.8", None), ("2606:4700::1111", None),
     ("2002:7f00:1::", "loopback"), ("64:ff9b::a00:1", "private"), ("64:ff9b::808:808", "reserved")],
)  # fmt: skip
def test_refused_addresses(address, why):
    assert refused(ipaddress.ip_address(address)) == why


def test_vcard_is_escaped():
    assert escape_text("a\\b,c;d\r\ne") == "a\\\\b\\,c\\;d\\ne"
    card = contact_vcard("Ana\nEND:VCARD", "573001234567")
    assert card.split("\r\n").count("END:VCARD") == 1 and card.endswith("\r\nEND:VCARD")


async def test_cache_bounds(tmp_path: Path):
    cache = MediaCache(tmp_path, max_bytes=250, max_age=3600)

    async def put(key: str, size: int) -> None:
        async def download(path: Path) -> None:
            path.write_bytes(b"x" * size)

        cached = await cache.get_or_fetch(key, download)
        assert cached.size == size
        assert b"".join([c async for c in cached.chunks()]) == b"x" * size

    await put("a", 100)
    os.utime(cache.directory / "a", (time.time() - 10, time.time() - 10))  # the oldest
    await put("b", 100)
    await put("c", 100)  # 300 > 250: the oldest goes
    assert sorted(p.name for p in cache.directory.iterdir()) == ["b", "c"]
    os.utime(cache.directory / "b", (time.time() - 7200, time.time() - 7200))  # past max_age
    assert cache.evict() == 1
    assert [p.name for p in cache.directory.iterdir()] == ["c"]
    await put("huge", 1000)  # larger than the cache: served once, then evicted
    assert "huge" not in [p.name for p in cache.directory.iterdir()]


async def test_cache_downloads_once_for_concurrent_readers(tmp_path: Path):
    cache = MediaCache(tmp_path, max_bytes=10_000, max_age=3600)
    downloads = 0

    async def download(path: Path) -> None:
        nonlocal downloads
        downloads += 1
        await trio.sleep(0.01)
        path.write_bytes(b"data")

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(cache.get_or_fetch, "k", download)
    assert downloads == 1
    assert not [p for p in cache.directory.iterdir() if p.name.endswith(".part")]


async def test_a_failed_download_leaves_no_file(tmp_path: Path):
    cache = MediaCache(tmp_path, max_bytes=10_000, max_age=3600)

    async def download(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("gone")

    with pytest.raises(RuntimeError):
        await cache.get_or_fetch("k", download)
    assert list(cache.directory.iterdir()) == []


def _received(session_id: str, message_id: str, **data) -> Activity:
    return Activity(
        session_id=session_id,
        type=MESSAGE_RECEIVED,
        timestamp=time.time(),
        key=message_id,
        data={"message_id": message_id, "chat": "14155552671", "chat_jid": "14155552671@s.whatsapp.net",
              "from_jid": "14155552671@s.whatsapp.net", "from_me": False, "kind": "image", "text": "hi",
              "media": {"mimetype": "image/png"}, **data},
        attachment=b"serialized message",
    )  # fmt: skip


async def test_index_follows_the_log(event_store):
    index = await MessageIndex.open(event_store)
    await event_store.append([_received("s1", "A"), _received("s2", "B")])
    found = await index.get("s1", "A")
    assert found is not None and found.attachment == Attachment(
        message=b"serialized message", mimetype="image/png"
    )
    assert (found.sender_jid, found.from_me, found.text) == ("14155552671@s.whatsapp.net", False, "hi")
    assert found.in_chat("14155552671@s.whatsapp.net") and not found.in_chat("1@g.us")
    assert await index.get("s2", "A") is None  # another session's id space
    index.add(IndexedMessage(session_id="s1", message_id="C", chat=None, chat_jid="1@g.us",
                             sender_jid="2@s.whatsapp.net", from_me=True, kind="text"))  # fmt: skip
    assert await index.flush()
    assert await index.forget_session("s1") == 2
    assert await index.get("s2", "B") is not None


async def test_index_pruned_with_the_retention(event_store):
    index = await MessageIndex.open(event_store)
    await event_store.append([_received("s1", "OLD")])
    assert await event_store.call(index._table.prune, time.time() + 1) == 1
    assert await index.get("s1", "OLD") is None


async def test_an_incomplete_message_is_logged_without_an_index_row(event_store):
    index = await MessageIndex.open(event_store)
    odd = Activity(session_id="s1", type=MESSAGE_RECEIVED, timestamp=time.time(), data={"text": "no id"})
    logged = await event_store.append([odd, _received("s1", "FINE")])
    assert len(logged) == 2  # the log never fails because of the index
    assert await index.get("s1", "FINE") is not None


def _sent(message_id: str) -> IndexedMessage:
    return IndexedMessage(session_id="s1", message_id=message_id, chat="1", chat_jid="1@s.whatsapp.net",
                          sender_jid="2@s.whatsapp.net", from_me=True, kind="text")  # fmt: skip


async def test_sent_messages_are_readable_at_once_and_written_in_batches(event_store):
    index = await MessageIndex.open(event_store)
    writes: list[int] = []
    add_many = index._table.add_many
    index._table.add_many = lambda messages: (writes.append(len(messages)), add_many(messages))[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(index.run)
        for n in range(50):
            index.add(_sent(f"M{n}"))
            assert await index.get("s1", f"M{n}") is not None  # before any write
        while sum(writes) < 50:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert len(writes) < 50  # batched
    assert index._pending == {}
    assert all([await event_store.call(index._table.get, "s1", f"M{n}") for n in range(50)])


async def test_a_refused_write_keeps_the_rows_for_the_next_flush(event_store):
    index = await MessageIndex.open(event_store)
    add_many = index._table.add_many

    def broken(messages):
        raise sqlite3.OperationalError("disk I/O error")

    index._table.add_many = broken
    index.add(_sent("X"))
    assert not await index.flush()
    assert await index.get("s1", "X") is not None  # still pending
    index._table.add_many = add_many
    assert await index.flush()  # e.g. at shutdown
    assert await event_store.call(index._table.get, "s1", "X") is not None
    index.add(_sent("Y"))
    assert await index.forget_session("s1") == 1  # the written one; the pending one is dropped
    assert await index.get("s1", "Y") is None
