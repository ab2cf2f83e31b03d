"""neonize's events -> `Activity` (events/model.py), with data shaped by events/types.py. Pure.

The only way out is `Normalizer.activities(event, received)`, called on Go's callback thread; the one
call it may make into Go is the `lookup` it is given (a LID whose phone number no message taught us).

Decisions (documented in events/types.py too):
- A person is a phone number with their JID beside it. Every message teaches the device's `PhoneBook`
  a LID -> number pair (SenderAlt, RecipientAlt; a history sync's own table); receipts and typing,
  which carry no alternative, are resolved from it, then from whatsmeow's store (`lookup`).
- `Activity.key` is the id of the WhatsApp message that carried the activity (for an edit, reaction
  or deletion: that message, not the one it is about), so a redelivered copy is logged once; a
  receipt's key is message id + status + who acknowledged, one event per message id.
- Receipts are reported for messages this account sent: delivered (and "inactive", which is a
  delivery to a phone that is not in the foreground), read, played. The rest are not events:
  READ_SELF/PLAYED_SELF (this account read someone else's message on another device), SENDER (this
  account's other device got its own message), RETRY (a recipient asks whatsmeow to re-encrypt;
  whatsmeow answers it), SERVER_ERROR, PEER_MSG, HISTORY_SYNC (protocol traffic).
- A message that could not be decrypted is not an event: whatsmeow asks the sender to resend, and the
  resent copy arrives as a MessageEv with the same id (reporting the failed one would make the log
  drop the real one as a duplicate). It is logged.
- Protocol messages other than edits and deletions (key shares, history-sync notices, disappearing
  timer changes), and messages with nothing but encryption bookkeeping, are not events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
from neonize.events import (
    CallOfferEv,
    ChatPresenceEv,
    HistorySyncEv,
    MessageEv,
    PresenceEv,
    ReceiptEv,
    UndecryptableMessageEv,
)
from neonize.proto.Neonize_pb2 import JID, ChatPresence, MessageSource, Receipt
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ContextInfo, Message, ProtocolMessage

from ...events import model as m
from ...events import types as t
from ...events.model import Activity

log = logging.getLogger("waservice.engine.normalize")

PN_SERVER = "s.whatsapp.net"
LID_SERVER = "lid"
GROUP_SERVER = "g.us"
GO_ZERO_TIME = -62135596800  # what Go's zero time.Time is in unix seconds: "unknown"
HISTORY_CHUNK = 500  # history messages per event (a first sync holds thousands)

# Receipt types that are events, and their status.
_ACK_STATUS = {
    Receipt.DELIVERED: "delivered",
    Receipt.INACTIVE: "delivered",
    Receipt.READ: "read",
    Receipt.PLAYED: "played",
}
# Wrappers around the real content (whatsmeow unwraps a live message's; a history message's are not).
_WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
    "editedMessage",
    "deviceSentMessage",
)
# Fields that travel with content but are not content themselves.
_BOOKKEEPING = frozenset({"senderKeyDistributionMessage", "messageContextInfo"})

LookupPhone = Callable[[JID], str | None]


class PhoneBook:
    """LID -> phone number of one device's contacts, bounded (oldest first out)."""

    def __init__(self, limit: int = 50_000) -> None:
        self._phones: dict[str, str] = {}
        self._limit = limit

    def learn(self, lid: str, phone: str) -> None:
        if not lid or not phone or self._phones.get(lid) == phone:
            return
        self._phones.pop(lid, None)
        self._phones[lid] = phone
        if len(self._phones) > self._limit:
            del self._phones[next(iter(self._phones))]

    def get(self, lid: str) -> str | None:
        return self._phones.get(lid)


class Normalizer:
    """One device's events -> activities. `own_phone` is set once whatsmeow says who we are."""

    def __init__(
        self, session: str, book: PhoneBook, lookup: LookupPhone | None = None, history_messages: bool = False
    ) -> None:
        self.session = session
        self.book = book
        self.lookup = lookup
        self.history_messages = history_messages
        self.own_phone: str | None = None

    def activities(self, event: object, received: float) -> list[Activity]:
        """Never raises: WhatsApp was already told a message arrived, so a message this code fails
        to read is still reported, as kind "unknown" with the ids it came with."""
        try:
            return self._activities(event, received)
        except Exception:
            log.exception("session=%s cannot normalise a %s", self.session, type(event).__name__)
            if not isinstance(event, MessageEv):
                return []
            return [self._unreadable(event, received)]

    def _unreadable(self, event: MessageEv, received: float) -> Activity:
        info = event.Info
        source = info.MessageSource
        data = t.MessageReceived(
            message_id=info.ID,
            chat=None,
            chat_jid=jid_text(source.Chat),
            from_=None,
            from_jid=jid_text(source.Sender),
            from_me=source.IsFromMe,
            is_group=source.IsGroup,
            kind="unknown",
        )
        return self._activity(m.MESSAGE_RECEIVED, received, data, info.ID, received)

    def _activities(self, event: object, received: float) -> list[Activity]:
        match event:
            case MessageEv():
                return self._message(event, received)
            case ReceiptEv():
                return self._receipt(event, received)
            case ChatPresenceEv():
                return self._typing(event, received)
            case PresenceEv():
                return self._presence(event, received)
            case CallOfferEv():
                return self._call(event, received)
            case HistorySyncEv():
                return self._history(event, received)
            case UndecryptableMessageEv():
                info = event.Info
                log.warning(
                    "session=%s message %s from %s could not be decrypted (unavailable=%s); "
                    "whatsmeow asked for it again",
                    self.session,
                    info.ID,
                    jid_text(info.MessageSource.Sender),
                    event.IsUnavailable,
                )
        return []

    # -- people ------------------------------------------------------------------------------

    def phone(self, jid: JID) -> str | None:
        """The phone number behind a JID, or None (a group, or a LID nobody could map)."""
        if jid.Server == PN_SERVER:
            return jid.User or None
        if jid.Server != LID_SERVER or not jid.User:
            return None
        phone = self.book.get(jid.User)
        if phone is None and self.lookup is not None and (phone := self.lookup(bare(jid))):
            self.book.learn(jid.User, phone)
        return phone

    def _learn(self, source: MessageSource) -> None:
        _teach(self.book, source.Sender, source.SenderAlt)
        if not source.IsGroup:
            _teach(self.book, source.Chat, source.RecipientAlt)

    def _chat(self, source: MessageSource) -> dict[str, Any]:
        chat = source.Chat
        return {"chat": jid_text(chat) if source.IsGroup else self.phone(chat), "chat_jid": jid_text(chat)}

    def _sender(self, source: MessageSource) -> dict[str, Any]:
        phone = self.phone(source.Sender)
        if phone is None and source.IsFromMe:
            phone = self.own_phone
        return {"from_": phone, "from_jid": jid_text(source.Sender)}

    def _origin(self, source: MessageSource) -> dict[str, Any]:
        return {
            **self._chat(source),
            **self._sender(source),
            "from_me": source.IsFromMe,
            "is_group": source.IsGroup,
        }

    # -- events ------------------------------------------------------------------------------

    def _message(self, event: MessageEv, received: float) -> list[Activity]:
        info = event.Info
        source = info.MessageSource
        self._learn(source)
        when = info.Timestamp / 1000 if info.Timestamp > 0 else received  # milliseconds
        message = event.Message
        data: msgspec.Struct | None = None
        attachment: bytes | None = None
        if message.HasField("protocolMessage"):
            data = self._protocol(message.protocolMessage, source)
        elif message.HasField("reactionMessage"):
            reaction = message.reactionMessage
            data = t.MessageReaction(message_id=reaction.key.ID, emoji=reaction.text, **self._origin(source))
        elif (content := message_content(message)) is not None:
            data = t.MessageReceived(
                message_id=info.ID, push_name=info.Pushname or None, **content, **self._origin(source)
            )
            if content["media"] is not None:
                attachment = media_attachment(message)
        if data is None:
            return []
        kind = _TYPE_OF[type(data)]
        return [self._activity(kind, when, data, info.ID, received, attachment)]

    def _protocol(self, protocol: ProtocolMessage, source: MessageSource) -> msgspec.Struct | None:
        if not protocol.HasField("type"):  # REVOKE is 0, proto2's default: unset is not a revoke
            return None
        if protocol.type == ProtocolMessage.REVOKE:
            return t.MessageDeleted(message_id=protocol.key.ID, **self._origin(source))
        if protocol.type == ProtocolMessage.MESSAGE_EDIT:
            content = message_content(protocol.editedMessage)
            text = content["text"] if content is not None else None
            return t.MessageEdited(message_id=protocol.key.ID, text=text, **self._origin(source))
        return None

    def _receipt(self, event: ReceiptEv, received: float) -> list[Activity]:
        receipt_type = event.Type if event.HasField("Type") else Receipt.DELIVERED  # unset = delivered
        status = _ACK_STATUS.get(receipt_type)
        if status is None:
            return []
        when = event.Timestamp if event.Timestamp > 0 else received  # seconds
        source = event.MessageSource
        who = self._sender(source)
        where = self._chat(source)
        who_key = who["from_"] or who["from_jid"]
        return [
            self._activity(
                m.MESSAGE_ACK,
                when,
                t.MessageAck(message_id=message_id, status=status, timestamp=m.iso_utc(when), **where, **who),
                f"{message_id}:{status}:{who_key}",
                received,
            )
            for message_id in event.MessageIDs
        ]

    def _typing(self, event: ChatPresenceEv, received: float) -> list[Activity]:
        source = event.MessageSource
        if event.State == ChatPresence.COMPOSING:
            state = "recording" if event.Media == ChatPresence.AUDIO else "composing"
        else:
            state = "paused"
        data = t.ChatTyping(
            state=state, is_group=source.IsGroup, **self._chat(source), **self._sender(source)
        )
        return [self._activity(m.CHAT_TYPING, received, data, None, received)]

    def _presence(self, event: PresenceEv, received: float) -> list[Activity]:
        seen = event.LastSeen if event.LastSeen not in (0, GO_ZERO_TIME) else None
        data = t.Presence(
            from_=self.phone(event.From),
            from_jid=jid_text(event.From),
            available=not event.Unavailable,
            last_seen=m.iso_utc(seen) if seen is not None else None,
        )
        return [self._activity(m.PRESENCE, received, data, None, received)]

    def _call(self, event: CallOfferEv, received: float) -> list[Activity]:
        meta = event.basicCallMeta
        caller = meta.callCreator if meta.HasField("callCreator") else getattr(meta, "from")
        phone = self.phone(caller)
        if phone is None and meta.HasField("callCreatorAlt"):
            _teach(self.book, caller, meta.callCreatorAlt)
            phone = self.phone(caller)
        when = meta.timestamp if meta.timestamp > 0 else received  # seconds
        data = t.CallReceived(
            call_id=meta.callID, from_=phone, from_jid=jid_text(caller), timestamp=m.iso_utc(when)
        )
        return [self._activity(m.CALL_RECEIVED, when, data, f"call:{meta.callID}", received)]

    def _history(self, event: HistorySyncEv, received: float) -> list[Activity]:
        sync = event.Data
        for mapping in sync.phoneNumberToLidMappings:
            self.book.learn(_user(mapping.lidJID), _user(mapping.pnJID))
        sync_type = type(sync).HistorySyncType.Name(sync.syncType)
        count = sum(len(conversation.messages) for conversation in sync.conversations)
        if count == 0:
            return []
        if not self.history_messages:
            return [
                self._activity(
                    m.HISTORY_SYNC, received, t.HistorySync(sync_type=sync_type, count=count), None, received
                )
            ]
        activities = []
        chunk: list[t.MessageReceived] = []
        for message in self._history_messages(sync):
            chunk.append(message)
            if len(chunk) == HISTORY_CHUNK:
                activities.append(self._history_chunk(sync_type, chunk, received))
                chunk = []
        if chunk:
            activities.append(self._history_chunk(sync_type, chunk, received))
        return activities

    def _history_chunk(self, sync_type: str, chunk: list[t.MessageReceived], received: float) -> Activity:
        data = t.HistorySync(sync_type=sync_type, count=len(chunk), messages=chunk)
        return self._activity(m.HISTORY_SYNC, received, data, None, received)

    def _history_messages(self, sync: Any) -> Iterator[t.MessageReceived]:
        for conversation in sync.conversations:
            chat_jid = parse_jid(conversation.ID)
            is_group = chat_jid.Server == GROUP_SERVER
            chat = jid_text(chat_jid) if is_group else self.phone(chat_jid)
            for item in conversation.messages:
                info = item.message
                content = message_content(info.message)
                if content is None:
                    continue
                from_me = info.key.fromMe
                if from_me:
                    sender, phone = None, self.own_phone
                else:
                    sender = parse_jid(info.key.participant or info.participant) if is_group else chat_jid
                    phone = self.phone(sender)
                yield t.MessageReceived(
                    message_id=info.key.ID,
                    chat=chat,
                    chat_jid=jid_text(chat_jid),
                    from_=phone,
                    from_jid=jid_text(sender) if sender is not None else f"{self.own_phone}@{PN_SERVER}",
                    from_me=from_me,
                    is_group=is_group,
                    push_name=info.pushName or None,
                    **content,
                )

    def _activity(
        self,
        kind: str,
        when: float,
        data: msgspec.Struct,
        key: str | None,
        received: float,
        attachment: bytes | None = None,
    ) -> Activity:
        return Activity(
            session_id=self.session,
            type=kind,
            timestamp=when,
            data=msgspec.to_builtins(data),
            key=key,
            received=received,
            attachment=attachment,
        )


_TYPE_OF = {cls: name for name, cls in t.DATA.items()}


# -- message content ------------------------------------------------------------------------------


def message_content(message: Message) -> dict[str, Any] | None:
    """kind, text, quoted_message_id, media, location, contact of a message; None if it has no content."""
    message = _unwrapped(message)
    present = {field.name for field, _ in message.ListFields()}
    if not present - _BOOKKEEPING:
        return None
    content: dict[str, Any] = {
        "kind": "unknown",
        "text": None,
        "media": None,
        "location": None,
        "contact": None,
    }
    context: ContextInfo | None = None
    if message.HasField("conversation"):
        content.update(kind="text", text=message.conversation)
    elif message.HasField("extendedTextMessage"):
        extended = message.extendedTextMessage
        content.update(kind="text", text=extended.text)
        context = extended.contextInfo
    elif (media := _media(message)) is not None:
        kind, part = media
        content.update(kind=kind, text=getattr(part, "caption", "") or None, media=_media_meta(kind, part))
        context = part.contextInfo
    elif message.HasField("locationMessage"):
        place = message.locationMessage
        content.update(kind="location", location=_location(place, place.name, place.address))
        context = place.contextInfo
    elif message.HasField("liveLocationMessage"):
        place = message.liveLocationMessage
        content.update(kind="location", location=_location(place, None, None), text=place.caption or None)
        context = place.contextInfo
    elif message.HasField("contactMessage"):
        card = message.contactMessage
        content.update(
            kind="contact", contact=t.Contact(name=card.displayName or None, vcard=card.vcard or None)
        )
        context = card.contextInfo
    elif message.HasField("contactsArrayMessage") and message.contactsArrayMessage.contacts:
        cards = message.contactsArrayMessage
        first = cards.contacts[0]
        name = cards.displayName or first.displayName or None
        content.update(kind="contact", contact=t.Contact(name=name, vcard=first.vcard or None))
        context = cards.contextInfo
    quoted = context.stanzaID if context is not None and context.stanzaID else None
    content["quoted_message_id"] = quoted
    return content


def media_attachment(message: Message) -> bytes | None:
    """A serialized waE2E.Message holding just the message's media part: what whatsmeow's
    DownloadAny needs (URL, direct path, media key, hashes), without wrappers or quoted messages."""
    message = _unwrapped(message)
    field = next((name for name in _MEDIA_FIELDS if message.HasField(name)), None)
    if field is None:
        return None
    attachment = Message()
    part = getattr(attachment, field)
    part.CopyFrom(getattr(message, field))
    for name in _NOT_FOR_DOWNLOAD:
        if name in part.DESCRIPTOR.fields_by_name:
            part.ClearField(name)
    return attachment.SerializeToString()


def _unwrapped(message: Message) -> Message:
    for _ in range(4):  # wrappers nest (an ephemeral view-once message): a few levels at most
        wrapper = next((name for name in _WRAPPERS if message.HasField(name)), None)
        if wrapper is None:
            break
        message = getattr(message, wrapper).message
    return message


# Kept in the event log for each media message, so what download does not read is left out: the
# quoted message and the inline previews (a thumbnail can be tens of KB).
_NOT_FOR_DOWNLOAD = ("contextInfo", "JPEGThumbnail", "pngThumbnail", "waveform", "streamingSidecar")
_MEDIA_FIELDS = (
    "imageMessage",
    "videoMessage",
    "ptvMessage",
    "audioMessage",
    "documentMessage",
    "stickerMessage",
)


def _media(message: Message) -> tuple[str, Any] | None:
    if message.HasField("imageMessage"):
        return "image", message.imageMessage
    if message.HasField("videoMessage"):
        return "video", message.videoMessage
    if message.HasField("ptvMessage"):  # a round video note
        return "video", message.ptvMessage
    if message.HasField("audioMessage"):
        audio = message.audioMessage
        return ("voice" if audio.PTT else "audio"), audio
    if message.HasField("documentMessage"):
        return "document", message.documentMessage
    if message.HasField("stickerMessage"):
        return "sticker", message.stickerMessage
    return None


def _media_meta(kind: str, part: Any) -> t.Media:
    return t.Media(
        mimetype=part.mimetype or None,
        size=part.fileLength or None,
        file_name=(part.fileName or part.title or None) if kind == "document" else None,
        sha256=part.fileSHA256.hex() or None,
        seconds=(part.seconds or None) if kind in ("audio", "voice", "video") else None,
    )


def _location(place: Any, name: str | None, address: str | None) -> t.Location:
    return t.Location(
        lat=place.degreesLatitude, lng=place.degreesLongitude, name=name or None, address=address or None
    )


# -- JIDs ---------------------------------------------------------------------------------------


def jid_text(jid: JID) -> str:
    """user@server, without the device (a person's phone and their linked devices are one person)."""
    return f"{jid.User}@{jid.Server}" if jid.User else jid.Server


def bare(jid: JID) -> JID:
    """The person's JID without agent or device, every required (proto2) field set, as Go wants it."""
    return JID(User=jid.User, Server=jid.Server, RawAgent=0, Device=0, Integrator=0)


def parse_jid(text: str) -> JID:
    """A JID from its string form (history syncs use strings): user[.agent][:device]@server."""
    user, _, server = text.partition("@")
    return JID(User=user.split(":")[0].split(".")[0], Server=server)


def _user(text: str) -> str:
    return parse_jid(text).User if text else ""


def _teach(book: PhoneBook, one: JID, other: JID) -> None:
    """A LID and a phone JID of the same person, in either order."""
    if one.Server == LID_SERVER and other.Server == PN_SERVER:
        book.learn(one.User, other.User)
    elif one.Server == PN_SERVER and other.Server == LID_SERVER:
        book.learn(other.User, one.User)
