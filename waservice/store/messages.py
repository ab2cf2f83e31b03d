"""The message index: what the service knows about each message of a session, by its id (SQLite,
blocking), in a table beside the event log in waservice.db.

Replies, reactions, edits, deletes, read receipts and media downloads name a message by its id;
WhatsApp needs more than the id (who wrote it, its text for the quote, the media keys). Received
messages are indexed by `outbox`, inside the event log's append transaction, so an indexed message
is always a logged one; messages this service sent are indexed by the send routes. Rows age out
with the event log's retention and go with their session.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..engine.content import Attachment
from ..errors import StorageFailed
from ..events.model import MESSAGE_RECEIVED, Activity, LoggedEvent

if TYPE_CHECKING:
    from . import EventStore

__all__ = [
    "IndexedMessage",
    "MessageIndex",
    "MessageTable",
    "indexed_from_row",
    "message_row",
    "received_rows",
]

log = logging.getLogger("waservice.store")
PRUNE_INTERVAL = 600.0
WRITE_DELAY = 0.02  # seconds sent messages gather before they are written together
RETRY_DELAY = 5.0  # after the database refused a write
MAX_PENDING = 100_000  # rows waiting for a database that refuses writes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    chat TEXT,  -- the phone number of a 1:1 chat, a group's JID (as events show it)
    chat_jid TEXT NOT NULL,
    sender_jid TEXT NOT NULL,  -- the author (the account's own phone JID for its own messages)
    from_me INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT,  -- the text or caption, quoted by a reply
    attachment BLOB,  -- serialized waE2E.Message of a received media message (its keys): private
    mimetype TEXT,
    indexed_at REAL NOT NULL,
    PRIMARY KEY (session_id, message_id)
);
CREATE INDEX IF NOT EXISTS messages_by_age ON messages (indexed_at);
"""


@attrs.frozen
class IndexedMessage:
    session_id: str
    message_id: str
    chat: str | None
    chat_jid: str
    sender_jid: str
    from_me: bool
    kind: str
    text: str | None = None
    attachment: Attachment | None = attrs.field(default=None, repr=False)  # the media key is secret

    def in_chat(self, chat_jid: str) -> bool:
        """Whether `chat_jid` (what a request named) is this message's chat: its JID, or the
        phone-number JID of a 1:1 chat the index knows by another JID (a LID)."""
        return chat_jid == self.chat_jid or (self.chat is not None and chat_jid.split("@")[0] == self.chat)


class MessageTable:
    """Called through `EventStore.call` (one thread at a time), except `outbox`, which the log
    calls inside its append transaction on its own connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.executescript(_SCHEMA)

    def outbox(
        self, db: sqlite3.Connection, logged: Sequence[LoggedEvent], sources: Sequence[Activity]
    ) -> None:
        rows = received_rows(logged, sources, time.time())
        if rows:
            db.executemany(_UPSERT, rows)

    def add_many(self, messages: Sequence[IndexedMessage]) -> None:
        """Index messages this service sent (or any others), in one transaction: one fsync for all."""
        now = time.time()
        rows = [message_row(message, now) for message in messages]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(_UPSERT, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def get(self, session_id: str, message_id: str) -> IndexedMessage | None:
        row = self._db.execute(
            "SELECT session_id, message_id, chat, chat_jid, sender_jid, from_me, kind, text, attachment,"
            " mimetype FROM messages WHERE session_id = ? AND message_id = ?",
            (session_id, message_id),
        ).fetchone()
        return None if row is None else indexed_from_row(row)

    def forget_session(self, session_id: str) -> int:
        return self._db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,)).rowcount

    def prune(self, before: float, limit: int = 10_000) -> int:
        """Delete up to `limit` rows indexed before `before` (unix time), the log's retention."""
        return self._db.execute(
            "DELETE FROM messages WHERE rowid IN "
            "(SELECT rowid FROM messages WHERE indexed_at < ? ORDER BY indexed_at LIMIT ?)",
            (before, limit),
        ).rowcount


# A redelivered message (same id) refreshes its row: the newest copy wins.
_UPSERT = """
INSERT INTO messages (session_id, message_id, chat, chat_jid, sender_jid, from_me, kind, text,
                      attachment, mimetype, indexed_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id, message_id) DO UPDATE SET
    chat = excluded.chat, chat_jid = excluded.chat_jid, sender_jid = excluded.sender_jid,
    from_me = excluded.from_me, kind = excluded.kind, text = excluded.text,
    attachment = excluded.attachment, mimetype = excluded.mimetype, indexed_at = excluded.indexed_at
"""


def indexed_from_row(row: Sequence) -> IndexedMessage:
    """From (session, message id, chat, chat JID, sender JID, from me, kind, text, attachment, mimetype)."""
    session, id_, chat, chat_jid, sender, from_me, kind, text, attachment, mimetype = row
    return IndexedMessage(
        session_id=session,
        message_id=id_,
        chat=chat,
        chat_jid=chat_jid,
        sender_jid=sender,
        from_me=bool(from_me),
        kind=kind,
        text=text,
        attachment=None if attachment is None else Attachment(message=attachment, mimetype=mimetype),
    )


def message_row(message: IndexedMessage, now: float) -> tuple[object, ...]:
    attachment = message.attachment
    return (
        message.session_id,
        message.message_id,
        message.chat,
        message.chat_jid,
        message.sender_jid,
        int(message.from_me),
        message.kind,
        message.text,
        attachment.message if attachment else None,
        attachment.mimetype if attachment else None,
        now,
    )


def received_rows(
    logged: Sequence[LoggedEvent], sources: Sequence[Activity], now: float
) -> list[tuple[object, ...]]:
    """The rows of the received messages among events an append logged (an outbox's work)."""
    return [
        row
        for event, source in zip(logged, sources, strict=True)
        if event.type == MESSAGE_RECEIVED and (row := received_row(event, source, now)) is not None
    ]


def received_row(event: LoggedEvent, source: Activity, now: float) -> tuple[object, ...] | None:
    """The row of a logged message, or None when its data lacks what the index needs: a failure
    here would fail the append, and the event with it."""
    data = event.data
    message_id, chat_jid, sender = data.get("message_id"), data.get("chat_jid"), data.get("from_jid")
    if not (isinstance(message_id, str) and isinstance(chat_jid, str) and isinstance(sender, str)):
        log.warning("session=%s message.received %s not indexed: incomplete data", event.session_id, event.id)
        return None
    media = data.get("media")
    text, chat, kind = data.get("text"), data.get("chat"), data.get("kind")
    return (
        event.session_id,
        message_id,
        chat if isinstance(chat, str) else None,
        chat_jid,
        sender,
        int(data.get("from_me") is True),
        kind if isinstance(kind, str) else "unknown",
        text if isinstance(text, str) else None,
        source.attachment,
        media.get("mimetype") if isinstance(media, dict) and isinstance(media.get("mimetype"), str) else None,
        now,
    )


class MessageIndex:
    """The table in the event store's worker thread (its one connection beside the log)."""

    def __init__(self, events: EventStore, table: MessageTable) -> None:
        self._events = events
        self._table = table
        # Messages this service sent, not yet written: `run` writes them in batches; reads see them.
        self._pending: dict[tuple[str, str], IndexedMessage] = {}
        self._arrived = trio.Event()

    @classmethod
    async def open(
        cls, events: EventStore, table_type: Callable[[Any], MessageTable] = MessageTable
    ) -> MessageIndex:
        """Create the table and index every received message logged from now on (call before
        anything is logged). A cluster's store passes `table_type=PgMessageTable`."""
        table = await events.call(table_type, events.connection)
        events.add_outbox(table.outbox)
        return cls(events, table)

    async def get(self, session_id: str, message_id: str) -> IndexedMessage | None:
        pending = self._pending.get((session_id, message_id))
        if pending is not None:
            return pending
        return await self._events.call(self._table.get, session_id, message_id)

    def add(self, message: IndexedMessage) -> None:
        """Index a message this service sent (or update one): visible to `get` at once, written
        by `run` within WRITE_DELAY. Not awaited by the send: an fsync and a thread hop per message
        cost /send about 5 % of its throughput. A crash in that window loses the row (a reaction,
        edit or delete of that message then answers 404), never the message."""
        if len(self._pending) >= MAX_PENDING:  # the disk refuses writes: keep memory bounded
            oldest = next(iter(self._pending))
            log.error("message index: %d rows waiting to be written; dropped %s", MAX_PENDING, oldest)
            del self._pending[oldest]
        self._pending[(message.session_id, message.message_id)] = message
        self._arrived.set()

    async def run(self) -> None:
        """Write added messages in batches, until cancelled (then call `flush`)."""
        while True:
            await self._arrived.wait()
            await trio.sleep(WRITE_DELAY)  # let a burst gather into one transaction
            self._arrived = trio.Event()
            if not await self.flush():
                await trio.sleep(RETRY_DELAY)
                self._arrived.set()

    async def flush(self) -> bool:
        """Write what is pending now; False (kept for a retry) if the database refused."""
        batch = list(self._pending.values())
        if not batch:
            return True
        try:
            with trio.CancelScope(shield=True):  # a write under way finishes, so `pending` stays true
                await self._events.call(self._table.add_many, batch)
        except StorageFailed as exc:
            log.warning("message index: %d row(s) not written yet: %s", len(batch), exc)
            return False
        for message in batch:
            key = (message.session_id, message.message_id)
            if self._pending.get(key) is message:  # not replaced meanwhile (an edit)
                del self._pending[key]
        return True

    async def forget_session(self, session_id: str) -> int:
        for key in [key for key in self._pending if key[0] == session_id]:
            del self._pending[key]
        return await self._events.call(self._table.forget_session, session_id)

    async def prune_forever(self, retention_days: float, interval: float = PRUNE_INTERVAL) -> None:
        """Rows leave with the log's retention, a bounded chunk at a time."""
        while True:
            try:
                before = time.time() - retention_days * 86400
                while (pruned := await self._events.call(self._table.prune, before)) > 0:
                    log.info("pruned %d indexed message(s) older than %g day(s)", pruned, retention_days)
                    await trio.sleep(0)
            except StorageFailed as exc:
                log.warning("could not prune the message index: %s", exc)
            await trio.sleep(interval)
