"""The `data` of each event type reported by an engine: msgspec Structs, built into dicts with
`msgspec.to_builtins` (every field present; null when it does not apply), and OpenAPI components.

Pure: the engine workers import this, and so does the API process; nothing of neonize here.

Conventions every type follows:
- A person is a phone number: digits with the country code, no "+" (`from`, `chat` of a 1:1 chat),
  with the WhatsApp JID beside it (`from_jid`, `chat_jid`, without a device suffix). WhatsApp names
  people by LIDs (`…@lid`); the engine maps them to phone numbers, and when it cannot (a LID it has
  never seen with its number) the number is null and only the JID says who it was.
- A group chat's `chat` is its JID (`…@g.us`), and `is_group` is true.
- Times inside `data` are ISO-8601 UTC strings (`iso_utc`); the envelope's timestamp is when it happened.
- Hashes are lowercase hex.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from . import model as m

Kind = Literal[
    "text", "image", "video", "audio", "voice", "document", "sticker", "location", "contact", "unknown"
]
AckStatus = Literal["delivered", "read", "played"]
TypingState = Literal["composing", "recording", "paused"]


class Media(msgspec.Struct, kw_only=True):
    """What describes an attachment; the file itself is not downloaded."""

    mimetype: str | None = None
    size: int | None = None  # bytes
    file_name: str | None = None  # documents only
    sha256: str | None = None  # of the plaintext file, hex
    seconds: int | None = None  # audio, voice and video


class Location(msgspec.Struct, kw_only=True):
    lat: float
    lng: float
    name: str | None = None
    address: str | None = None


class Contact(msgspec.Struct, kw_only=True):
    name: str | None = None
    vcard: str | None = None


class _Origin(msgspec.Struct, kw_only=True):
    """Where a message is and who wrote it."""

    chat: str | None  # phone number of a 1:1 chat, the group JID of a group
    chat_jid: str
    from_: str | None = msgspec.field(name="from")  # the author's phone number (own number if from_me)
    from_jid: str
    from_me: bool  # written by this account (from the phone, or sent through this service)
    is_group: bool


class MessageReceived(_Origin, kw_only=True):
    """`message.received`: a new message in a chat, incoming or written on the account's own phone."""

    message_id: str
    push_name: str | None = None  # the sender's own display name
    kind: Kind
    text: str | None = None  # the text, or a media message's caption
    quoted_message_id: str | None = None  # the message this one replies to
    media: Media | None = None
    location: Location | None = None
    contact: Contact | None = None


class MessageEdited(_Origin, kw_only=True):
    """`message.edited`: the author changed the text of `message_id`."""

    message_id: str
    text: str | None = None


class MessageDeleted(_Origin, kw_only=True):
    """`message.deleted`: `message_id` was deleted for everyone."""

    message_id: str


class MessageReaction(_Origin, kw_only=True):
    """`message.reaction`: a reaction to `message_id`; an empty emoji removes the reaction."""

    message_id: str
    emoji: str


class MessageAck(msgspec.Struct, kw_only=True):
    """`message.ack`: a message this account sent was delivered to, read or played by `from`.

    One event per message id (WhatsApp acknowledges several at once when a chat is opened). In a
    group, each member acknowledges separately: `from` says who. Not reported: this account reading
    someone else's message on another of its devices, and retry requests (the engine answers them).
    """

    message_id: str
    chat: str | None
    chat_jid: str
    from_: str | None = msgspec.field(name="from")
    from_jid: str
    status: AckStatus
    timestamp: str


class ChatTyping(msgspec.Struct, kw_only=True):
    """`chat.typing`: `from` is typing (`composing`), recording a voice note, or stopped (`paused`)."""

    chat: str | None
    chat_jid: str
    from_: str | None = msgspec.field(name="from")
    from_jid: str
    is_group: bool
    state: TypingState


class Presence(msgspec.Struct, kw_only=True):
    """`presence`: a contact came online or went offline (only for contacts the account subscribed to)."""

    from_: str | None = msgspec.field(name="from")
    from_jid: str
    available: bool
    last_seen: str | None  # null when unknown or hidden by the contact's privacy settings


class CallReceived(msgspec.Struct, kw_only=True):
    """`call.received`: an incoming call offer (the engine neither answers nor rejects it)."""

    call_id: str
    from_: str | None = msgspec.field(name="from")
    from_jid: str
    timestamp: str


class HistorySync(msgspec.Struct, kw_only=True):
    """`history.sync`: the phone sent a batch of past messages to this device.

    `messages` only when `[events] history_messages` is on (a full sync holds thousands); a large
    batch is reported as several events, each with its own part of the messages.
    """

    sync_type: str  # WhatsApp's name of the batch: INITIAL_BOOTSTRAP, RECENT, PUSH_NAME, ...
    count: int  # messages in this event (or in the batch, without `messages`)
    messages: list[MessageReceived] | None = None


# The data of each type an engine reports (session.status and session.qr come from the supervisor).
DATA: dict[str, type[msgspec.Struct]] = {
    m.MESSAGE_RECEIVED: MessageReceived,
    m.MESSAGE_EDITED: MessageEdited,
    m.MESSAGE_DELETED: MessageDeleted,
    m.MESSAGE_REACTION: MessageReaction,
    m.MESSAGE_ACK: MessageAck,
    m.CHAT_TYPING: ChatTyping,
    m.PRESENCE: Presence,
    m.CALL_RECEIVED: CallReceived,
    m.HISTORY_SYNC: HistorySync,
}
