"""The message index on the real server: received messages indexed in the append's transaction
(whichever node logged them), sent ones through `MessageIndex` batches, seen from another node,
pruned with the retention and forgotten with their session."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from waservice.cluster.eventstore import PgEventStore, open_pg_event_store
from waservice.cluster.messages import PgMessageTable
from waservice.engine.content import Attachment
from waservice.events.model import MESSAGE_RECEIVED, Activity
from waservice.store.messages import IndexedMessage, MessageIndex

pytestmark = pytest.mark.cluster


@pytest.fixture
async def stores(url: str) -> AsyncIterator[tuple[PgEventStore, PgEventStore]]:
    async with open_pg_event_store(url, size=2) as a, open_pg_event_store(url, size=2) as b:
        yield a, b


def received(session_id: str, message_id: str, **data: object) -> Activity:
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


async def test_messages_indexed_on_one_node_are_found_on_another(
    stores: tuple[PgEventStore, PgEventStore],
) -> None:
    a, b = stores
    on_a = await MessageIndex.open(a, table_type=PgMessageTable)
    on_b = await MessageIndex.open(b, table_type=PgMessageTable)
    odd = Activity(session_id="s1", type=MESSAGE_RECEIVED, timestamp=time.time(), data={"text": "no id"})
    logged = await a.append([received("s1", "A"), received("s2", "B"), odd, received("s1", "A", text="dup")])
    assert len(logged) == 3  # the duplicate is not logged; the incomplete one is, without a row

    found = await on_b.get("s1", "A")
    assert found is not None
    assert found.attachment == Attachment(message=b"serialized message", mimetype="image/png")
    assert (found.sender_jid, found.from_me, found.kind, found.text) == (
        "14155552671@s.whatsapp.net",
        False,
        "image",
        "hi",
    )
    assert await on_b.get("s2", "A") is None  # another session's id space

    on_b.add(IndexedMessage("s1", "C", None, "1@g.us", "2@s.whatsapp.net", True, "text", "sent"))
    assert await on_b.flush()
    sent = await on_a.get("s1", "C")
    assert sent is not None and sent.from_me and sent.attachment is None and sent.text == "sent"
    on_a.add(IndexedMessage("s1", "C", None, "1@g.us", "2@s.whatsapp.net", True, "text", "edited"))
    assert await on_a.flush()
    assert (await on_b.get("s1", "C")).text == "edited"  # the newest copy wins

    assert await on_a.forget_session("s1") == 2
    assert await on_b.get("s1", "A") is None and await on_b.get("s2", "B") is not None
    assert await b.call(on_b._table.prune, time.time() + 1) == 1
    assert await on_a.get("s2", "B") is None
