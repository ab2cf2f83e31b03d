"""Outgoing content (engine/content.py) as the WhatsApp protobuf whatsmeow sends.

The fields follow whatsmeow's own builders (BuildReaction, BuildMessageKey, BuildEdit, BuildRevoke)
and its upload example; neonize's media helpers are not used: given a string they open a local file
or fetch a URL with no limit, and audio and video need ffmpeg there. Media is uploaded from bytes,
without thumbnail or duration (WhatsApp clients show a placeholder).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from neonize.proto.Neonize_pb2 import UploadResponse
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    AudioMessage,
    ContactMessage,
    ContextInfo,
    DocumentMessage,
    FutureProofMessage,
    ImageMessage,
    LocationMessage,
    Message,
    ProtocolMessage,
    ReactionMessage,
    StickerMessage,
    VideoMessage,
)

from ..content import ContactCard, Content, Edit, Location, Media, Quote, Reaction, Revoke, Text
from .normalize import LID_SERVER, PN_SERVER, jid_text, parse_jid

# whatsmeow's MediaType for each kind: it picks the HKDF info ("WhatsApp Image Keys"...) and the
# upload path. A sticker is encrypted as an image; a voice note is audio.
MEDIA_TYPE = {"image": 0, "video": 1, "audio": 2, "voice": 2, "document": 3, "sticker": 0}

Upload = Callable[[bytes, int], UploadResponse]


class BuildError(Exception):
    """The content cannot be sent as given (a clear message for the user)."""


def build(chat: str, content: Content, own_phone: str | None, upload: Upload) -> Message:
    """The message to send to `chat`. Media is read from its spool file and uploaded here, on the
    send's own thread: a slow upload holds only this send."""
    match content:
        case Text(text=text, reply_to=None):
            return Message(conversation=text)
        case Text(text=text, reply_to=quote):
            return Message(extendedTextMessage={"text": text, "contextInfo": _quoting(quote)})
        case Media():
            return _media(content, upload)
        case Location(lat=lat, lng=lng, name=name, address=address, reply_to=quote):
            place = LocationMessage(degreesLatitude=lat, degreesLongitude=lng, name=name, address=address)
            _reply(place, quote)
            return Message(locationMessage=place)
        case ContactCard(name=name, vcard=vcard, reply_to=quote):
            card = ContactMessage(displayName=name, vcard=vcard)
            _reply(card, quote)
            return Message(contactMessage=card)
        case Reaction(message_id=message_id, sender=sender, from_me=from_me, emoji=emoji):
            key = _key(chat, message_id, from_me, sender)
            return Message(reactionMessage=ReactionMessage(key=key, text=emoji, senderTimestampMS=_now_ms()))
        case Edit(message_id=message_id, text=text):
            edit = ProtocolMessage(
                key=MessageKey(fromMe=True, ID=message_id, remoteJID=_jid(chat)),
                type=ProtocolMessage.MESSAGE_EDIT,
                editedMessage=Message(conversation=text),
                timestampMS=_now_ms(),
            )
            return Message(editedMessage=FutureProofMessage(message=Message(protocolMessage=edit)))
        case Revoke(message_id=message_id, sender=sender):
            if own_phone is None:
                raise BuildError("the account's own number is not known yet")
            # whatsmeow sends an admin revoke ("8") when the key is not fromMe: only right for
            # someone else's message in a group this account administers.
            from_me = parse_jid(sender).User == own_phone
            key = _key(chat, message_id, from_me, sender)
            return Message(protocolMessage=ProtocolMessage(type=ProtocolMessage.REVOKE, key=key))
    raise BuildError(f"cannot send {type(content).__name__}")


def read_spool(path: str, size: int) -> bytes:
    """The media bytes the API spooled: exactly `size` of them, never more read into memory."""
    try:
        with open(path, "rb") as spool:
            data = spool.read(size + 1)
    except OSError as exc:
        raise BuildError(f"media file unreadable: {exc.strerror or exc}") from None
    if len(data) != size:
        raise BuildError(f"media file has {len(data)} bytes, expected {size}")
    if size == 0:
        raise BuildError("media file is empty")
    return data


def _media(media: Media, upload: Upload) -> Message:
    media_type = MEDIA_TYPE.get(media.kind)
    if media_type is None:
        raise BuildError(f"unknown media type {media.kind!r}")
    uploaded = upload(read_spool(media.path, media.size), media_type)
    fields: dict[str, Any] = {
        "URL": uploaded.url,
        "directPath": uploaded.DirectPath,
        "mediaKey": uploaded.MediaKey,
        "fileEncSHA256": uploaded.FileEncSHA256,
        "fileSHA256": uploaded.FileSHA256,
        "fileLength": uploaded.FileLength,
        "mimetype": media.mimetype,
        "mediaKeyTimestamp": int(time.time()),
    }
    if media.reply_to is not None:
        fields["contextInfo"] = _quoting(media.reply_to)
    caption = {"caption": media.caption} if media.caption else {}
    match media.kind:
        case "image":
            return Message(imageMessage=ImageMessage(**fields, **caption))
        case "video":
            return Message(videoMessage=VideoMessage(**fields, **caption))
        case "audio" | "voice":
            return Message(audioMessage=AudioMessage(**fields, PTT=media.kind == "voice"))
        case "document":
            name = media.file_name or "file"
            return Message(documentMessage=DocumentMessage(**fields, **caption, fileName=name, title=name))
        case _:  # sticker
            return Message(stickerMessage=StickerMessage(**fields))


def _quoting(quote: Quote) -> ContextInfo:
    """What WhatsApp clients show above a reply: the quoted id, its author and its text."""
    context = ContextInfo(stanzaID=quote.id, quotedMessage=Message(conversation=quote.text or ""))
    if quote.sender:
        context.participant = _jid(quote.sender)
    return context


def _reply(part: Any, quote: Quote | None) -> None:
    if quote is not None:
        part.contextInfo.CopyFrom(_quoting(quote))


def _key(chat: str, message_id: str, from_me: bool, sender: str) -> MessageKey:
    """whatsmeow's BuildMessageKey: someone else's message outside a one-to-one chat (a group)
    names its author."""
    key = MessageKey(fromMe=from_me, ID=message_id, remoteJID=_jid(chat))
    if not from_me and sender and parse_jid(chat).Server not in (PN_SERVER, LID_SERVER):
        key.participant = _jid(sender)
    return key


def _jid(text: str) -> str:
    """user@server without agent or device (whatsmeow's ToNonAD().String())."""
    return jid_text(parse_jid(text))


def _now_ms() -> int:
    return int(time.time() * 1000)
