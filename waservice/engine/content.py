"""What can be sent, and the other things a client does in a chat: pure data both processes share.

The API builds these from checked requests; the engine worker turns each into a WhatsApp protobuf
(worker/outgoing.py). Chats and senders are JID strings ("<digits>@s.whatsapp.net", "<id>@g.us",
"<id>@lid"). Media travels as a path to a spool file the API wrote and deletes after the send:
a queued 64 MiB upload then costs a path, not 64 MiB, and no frame carries it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

MediaKind = Literal["image", "video", "audio", "voice", "document", "sticker"]
TypingState = Literal["composing", "recording", "paused"]


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    """The message a reply quotes (found in the message index: who wrote it, and its text)."""

    id: str
    sender: str  # JID of its author (the account's own JID for its own messages)
    text: str | None = None  # shown in the quote; WhatsApp clients fetch nothing else


class Text(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    text: str
    reply_to: Quote | None = None


class Media(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    kind: MediaKind
    path: str  # spool file with the plaintext bytes; the worker reads it, the API deletes it
    mimetype: str
    size: int
    caption: str | None = None
    file_name: str | None = None  # documents: the name the recipient sees
    reply_to: Quote | None = None


class Location(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    lat: float
    lng: float
    name: str | None = None
    address: str | None = None
    reply_to: Quote | None = None


class ContactCard(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    name: str
    vcard: str  # built by the API (api/vcard.py), never by neonize
    reply_to: Quote | None = None


class Reaction(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    message_id: str
    sender: str  # JID of the reacted-to message's author
    from_me: bool
    emoji: str  # "" removes the reaction


class Edit(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    message_id: str  # one of the account's own messages
    text: str


class Revoke(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Delete for everyone. `sender` is the author's *phone-number* JID: for the account's own
    messages its own PN JID (its LID would make whatsmeow send an admin revoke)."""

    message_id: str
    sender: str


Content = Text | Media | Location | ContactCard | Reaction | Edit | Revoke


class NumberCheck(msgspec.Struct, frozen=True, kw_only=True):
    number: str  # digits, as asked
    on_whatsapp: bool
    jid: str | None  # the account's JID when it is on WhatsApp (a LID on current WhatsApp)


class Attachment(msgspec.Struct, frozen=True, kw_only=True):
    """What downloading a received message's media needs: the serialized waE2E.Message that
    carried it (media key, direct path, hashes). Kept privately in the message index, never sent
    in an event (the media key decrypts the file)."""

    message: bytes
    mimetype: str | None = None


class Downloaded(msgspec.Struct, frozen=True, kw_only=True):
    path: str  # the file the worker wrote the decrypted bytes to (the path the API gave it)
    size: int
