"""What the messaging routes call: each request, once validated, as calls on a session, with the
message index for whatever WhatsApp needs beyond a message's id (its author, its text, its media
keys). Routes stay thin: validate, one call here, shape the JSON."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import trio

from .engine import SentMessage
from .engine.content import Attachment, Content, Edit, NumberCheck, Quote, Reaction, Revoke, TypingState
from .errors import InvalidRequest, RequestFailed, StorageFailed, UnknownMessage
from .media.cache import CachedFile, MediaCache
from .media.spool import Spool
from .sessions.machine import ACTIVE, State
from .sessions.manager import SessionManager
from .sessions.supervisor import SessionSupervisor
from .store.messages import IndexedMessage, MessageIndex

log = logging.getLogger("waservice.messaging")

PAIR_WAIT = 30.0  # seconds /pair-code waits for a new session's first QR code


@attrs.frozen
class Recipient:
    jid: str  # what WhatsApp is given
    to: str  # what the response says: the digits of a phone number, else the JID

    @property
    def phone(self) -> str | None:
        """The digits of a person's phone-number JID (what a number check can ask about)."""
        user, _, server = self.jid.partition("@")
        return user if server == "s.whatsapp.net" else None

    @property
    def chat(self) -> str | None:
        """The chat as events name it: a 1:1 chat's number, a group's JID."""
        return self.jid if self.jid.endswith("@g.us") else self.phone


class Messaging:
    def __init__(
        self,
        manager: SessionManager,
        index: MessageIndex | None,
        spool: Spool,
        cache: MediaCache,
        check_number: bool = False,
    ) -> None:
        self.manager = manager
        self.index = index  # None only in tests without an event log: nothing can be looked up
        self.spool = spool
        self.cache = cache
        self.check_number = check_number  # /send's default

    # -- linking and contacts -------------------------------------------------------------------

    async def pair_code(self, session_id: str, phone: str) -> str:
        session = await self.manager.connect(session_id)
        state = State.CONNECTING
        with trio.move_on_after(PAIR_WAIT):
            state = await session.wait_for(
                lambda s: s in (State.QR_READY, State.CONNECTED) or s not in ACTIVE
            )
        if state is State.CONNECTED:
            raise InvalidRequest(f"session '{session_id}' is already linked and connected; nothing to pair")
        if state is State.CONNECTING:
            raise RequestFailed(f"pairing code failed: WhatsApp offered no pairing within {PAIR_WAIT:.0f} s")
        if state is not State.QR_READY:
            why = session.machine.last_error or f"the session is {state.value}"
            raise RequestFailed(f"pairing code failed: {why}")
        return await session.pair_code(phone)

    async def check_numbers(self, session_id: str, numbers: list[str]) -> list[NumberCheck]:
        session = self.manager.get(session_id)
        found = await session.call("number check", lambda c: c.check_numbers(numbers))
        by_number = {check.number: check for check in found}
        # One answer per number asked, in its order, even if WhatsApp skipped one.
        return [by_number.get(n, NumberCheck(number=n, on_whatsapp=False, jid=None)) for n in numbers]

    async def require_on_whatsapp(self, session_id: str, recipient: Recipient) -> None:
        if recipient.phone is None:
            return  # a group, or a JID WhatsApp gave: nothing to check
        (check,) = await self.check_numbers(session_id, [recipient.phone])
        if not check.on_whatsapp:
            raise InvalidRequest(f"{recipient.phone} is not on WhatsApp; nothing was sent")

    # -- sending --------------------------------------------------------------------------------

    async def quote(self, session_id: str, reply_to: str | None) -> Quote | None:
        if reply_to is None:
            return None
        message = await self.find(session_id, reply_to)
        return Quote(id=message.message_id, sender=message.sender_jid, text=message.text)

    async def send(
        self, session_id: str, recipient: Recipient, content: Content, *, kind: str, text: str | None = None
    ) -> SentMessage:
        """Send, then index the message as this account's own (replies, edits, deletes find it)."""
        session = self.manager.get(session_id)
        with self.manager.metrics.timing_send():
            sent = await self.manager.send(session_id, recipient.jid, content)
        self._index_sent(session, recipient, sent.id, kind, text)
        return SentMessage(id=sent.id, timestamp=sent.timestamp, to=recipient.to)

    def _index_sent(
        self, session: SessionSupervisor, recipient: Recipient, message_id: str, kind: str, text: str | None
    ) -> None:
        if self.index is None:
            return
        phone = session.info().phone_number
        if not phone:  # cannot happen once connected; the message went out, so never fail here
            log.warning(
                "session=%s sent %s with no phone number known: not indexed", session.session_id, message_id
            )
            return
        message = IndexedMessage(
            session_id=session.session_id,
            message_id=message_id,
            chat=recipient.chat,
            chat_jid=recipient.jid,
            sender_jid=f"{phone}@s.whatsapp.net",
            from_me=True,
            kind=kind,
            text=text,
        )
        self.index.add(message)

    async def react(self, session_id: str, chat: Recipient, message_id: str, emoji: str) -> SentMessage:
        target = await self.find(session_id, message_id, chat)
        reaction = Reaction(
            message_id=message_id, sender=target.sender_jid, from_me=target.from_me, emoji=emoji
        )
        sent = await self.manager.send(session_id, target.chat_jid, reaction)
        return SentMessage(id=sent.id, timestamp=sent.timestamp, to=chat.to)

    async def edit(self, session_id: str, chat: Recipient, message_id: str, text: str) -> SentMessage:
        target = await self.find(session_id, message_id, chat)
        if not target.from_me:
            raise InvalidRequest(
                f"message {message_id} was written by someone else: only your own can be edited"
            )
        sent = await self.manager.send(session_id, target.chat_jid, Edit(message_id=message_id, text=text))
        assert self.index is not None  # find() found it there
        self.index.add(attrs.evolve(target, text=text))  # a later reply quotes the new text
        return SentMessage(id=sent.id, timestamp=sent.timestamp, to=chat.to)

    async def revoke(self, session_id: str, chat: Recipient, message_id: str) -> SentMessage:
        target = await self.find(session_id, message_id, chat)
        session = self.manager.get(session_id)
        if target.from_me:
            sender = own_jid(session)  # its phone-number JID: its LID would make an admin revoke
        elif target.chat_jid.endswith("@g.us"):
            sender = target.sender_jid  # a group admin deleting a member's message
        else:
            raise InvalidRequest(
                f"message {message_id} was written by someone else: only your own can be deleted for everyone"
            )
        sent = await self.manager.send(
            session_id, target.chat_jid, Revoke(message_id=message_id, sender=sender)
        )
        return SentMessage(id=sent.id, timestamp=sent.timestamp, to=chat.to)

    # -- chats ----------------------------------------------------------------------------------

    async def mark_read(self, session_id: str, chat: Recipient, message_ids: list[str]) -> int:
        """Read receipts, one per author (a group's messages have several); returns how many ids."""
        by_sender: dict[tuple[str, str], list[str]] = {}
        for message_id in dict.fromkeys(message_ids):  # each once, in order
            message = await self.find(session_id, message_id, chat)
            if message.from_me:
                raise InvalidRequest(
                    f"message {message_id} is this account's own: only received ones are read"
                )
            by_sender.setdefault((message.chat_jid, message.sender_jid), []).append(message_id)
        session = self.manager.get(session_id)
        for (chat_jid, sender), ids in by_sender.items():
            await session.call("mark read", lambda c, ch=chat_jid, s=sender, i=ids: c.mark_read(ch, s, i))
        return sum(len(ids) for ids in by_sender.values())

    async def set_typing(self, session_id: str, chat: Recipient, state: TypingState) -> None:
        session = self.manager.get(session_id)
        await session.call("typing", lambda c: c.set_typing(chat.jid, state))

    # -- media ----------------------------------------------------------------------------------

    async def download(self, session_id: str, message_id: str) -> tuple[CachedFile, str]:
        """A received message's media (from the cache, or downloaded into it), and its mimetype."""
        message = await self.find(session_id, message_id)
        attachment = message.attachment
        if attachment is None:
            raise UnknownMessage(
                f"message {message_id} has no media to download (it is a {message.kind} message)"
            )
        session = self.manager.get(session_id)

        async def fetch(path: Path) -> None:
            await session.call("media download", lambda c: c.download(attachment, str(path)))

        try:
            cached = await self.cache.get_or_fetch(self.cache.key(session_id, message_id), fetch)
        except OSError as exc:
            raise StorageFailed(f"the media cache refused the file: {exc}") from None
        return cached, _mimetype(attachment)

    # -- the index ------------------------------------------------------------------------------

    async def find(self, session_id: str, message_id: str, chat: Recipient | None = None) -> IndexedMessage:
        self.manager.get(session_id)  # an unknown session says so, not "unknown message"
        message = None if self.index is None else await self.index.get(session_id, message_id)
        if message is None:
            raise UnknownMessage(
                f"no message {message_id} in session '{session_id}': the service knows the messages it "
                "sent or received (for the event retention), nothing older"
            )
        if chat is not None and not message.in_chat(chat.jid):
            raise UnknownMessage(
                f"no message {message_id} in chat {chat.to} (it is in {message.chat or message.chat_jid})"
            )
        return message

    async def forget_session(self, session_id: str) -> None:
        """After a delete: its messages go (else retention prunes them; a new session of the same
        id could meanwhile name the old ones)."""
        if self.index is None:
            return
        try:
            await self.index.forget_session(session_id)
        except StorageFailed as exc:  # the session is deleted: say so, and let retention finish it
            log.warning("session=%s deleted, but its indexed messages stay until pruned: %s", session_id, exc)


def own_jid(session: SessionSupervisor) -> str:
    """The account's own phone-number JID (known once it is connected)."""
    phone = session.info().phone_number
    if not phone:
        raise InvalidRequest(f"session '{session.session_id}' has no phone number yet: connect it first")
    return f"{phone}@s.whatsapp.net"


def _mimetype(attachment: Attachment) -> str:
    return attachment.mimetype or "application/octet-stream"
