"""Decoding a ``waE2E.Message`` into the fields tests assert on, with wasim's own protobuf reader.

The test process must never import neonize, so field numbers are read off neonize 0.5.2's
``WAWebProtobufsE2E`` and ``WACommon`` descriptors by hand (``waproto`` writes the same numbers).
Wrappers (``deviceSentMessage``, ``ephemeralMessage``, ``documentWithCaptionMessage``, view-once)
are unwrapped, so a test sees the message a person would see.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from . import proto, waproto

# waE2E.Message fields → the kind a test names.
_KINDS = {
    1: "text",
    6: "extended_text",
    3: "image",
    9: "video",
    8: "audio",
    7: "document",
    26: "sticker",
    5: "location",
    4: "contact",
    46: "reaction",
    12: "protocol",
}
# FutureProofMessage{message 1} wrappers (view once, ephemeral, documentWithCaption, editedMessage)
# and deviceSentMessage{message 2}: field → the inner message's field.
_WRAPPERS = {31: 2, 37: 1, 40: 1, 53: 1, 55: 1, 58: 1, 59: 1}
CONTEXT_INFO = 17


# ProtocolMessage.type values tests meet.
REVOKE = 0
MESSAGE_EDIT = 14


@dataclass(frozen=True)
class Media:
    """The fields of an image/video/audio/document/sticker message needed to fetch and check it."""

    url: str | None
    direct_path: str | None
    media_key: bytes | None
    file_sha256: bytes | None
    file_enc_sha256: bytes | None
    file_length: int | None
    mimetype: str | None
    caption: str | None = None
    file_name: str | None = None  # documents
    title: str | None = None  # documents
    ptt: bool = False  # audio: a voice note
    seconds: int | None = None  # audio and video


@dataclass(frozen=True)
class Context:
    """``contextInfo`` of a reply: the quoted message's id, author and (when a text) its text."""

    stanza_id: str | None
    participant: str | None
    quoted_text: str | None
    remote_jid: str | None = None


@dataclass(frozen=True)
class Key:
    """``WACommon.MessageKey``: which message a reaction, edit or revoke points at."""

    remote_jid: str | None
    from_me: bool
    id: str | None
    participant: str | None = None


@dataclass(frozen=True)
class Location:
    latitude: float | None
    longitude: float | None
    name: str | None = None
    address: str | None = None


@dataclass(frozen=True)
class ContactCard:
    display_name: str | None
    vcard: str | None


@dataclass(frozen=True)
class Content:
    """A decoded message. ``kind`` is one of text, extended_text, image, video, audio, document,
    sticker, location, contact, reaction, revoke, edit, protocol (other protocol messages) or unknown;
    the field that goes with the kind is set, the others are None."""

    kind: str
    text: str | None = None  # conversation or extendedTextMessage.text
    context: Context | None = None  # on any message that quotes another
    media: Media | None = None
    location: Location | None = None
    contact: ContactCard | None = None
    key: Key | None = None  # reaction, revoke, edit
    reaction: str | None = None  # the emoji; "" removes a reaction
    protocol_type: int | None = None
    edited: Content | None = None  # the new message of an edit
    fields: tuple[int, ...] = field(default=(), repr=False)  # top-level field numbers, as sent

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: bytes as base64, ``None`` fields left out."""
        return _jsonable(asdict(self))


def decode_message(data: bytes) -> Content:
    """Decode serialized ``waE2E.Message`` bytes (``ProtoError`` if they are not a message)."""
    fields = proto.decode(data)
    for number, inner_number in _WRAPPERS.items():
        wrapper = proto.first_bytes(fields, number)
        if wrapper is not None:
            inner = proto.first_bytes(proto.decode(wrapper), inner_number)
            if inner is not None:
                return decode_message(inner)
    kind = next((_KINDS[n] for n in fields if n in _KINDS), "unknown")
    body = proto.first_bytes(fields, next((n for n in fields if _KINDS.get(n) == kind), 0), b"") or b""
    sub = proto.decode(body) if kind not in ("text", "unknown") else {}
    top = tuple(fields)
    if kind == "text":
        return Content("text", text=_str(fields, 1), fields=top)
    if kind == "extended_text":
        return Content("extended_text", text=_str(sub, 1), context=_context(sub), fields=top)
    if kind in waproto.MEDIA_FIELDS:
        return Content(kind, media=_media(kind, sub), context=_context(sub), fields=top)
    if kind == "location":
        location = Location(_double(sub, 1), _double(sub, 2), _str(sub, 3), _str(sub, 4))
        return Content("location", location=location, context=_context(sub), fields=top)
    if kind == "contact":
        card = ContactCard(_str(sub, 1), _str(sub, 16))
        return Content("contact", contact=card, context=_context(sub), fields=top)
    if kind == "reaction":
        return Content("reaction", key=_key(sub), reaction=_str(sub, 2) or "", fields=top)
    if kind == "protocol":
        return _protocol(sub, top)
    return Content("unknown", fields=top)


def _protocol(sub: proto.Fields, top: tuple[int, ...]) -> Content:
    protocol_type = proto.first_int(sub, 2, REVOKE)
    edited_bytes = proto.first_bytes(sub, 14)
    edited = decode_message(edited_bytes) if edited_bytes is not None else None
    kind = {REVOKE: "revoke", MESSAGE_EDIT: "edit"}.get(protocol_type or 0, "protocol")
    text = edited.text if edited is not None else None
    return Content(kind, text=text, key=_key(sub), protocol_type=protocol_type, edited=edited, fields=top)


def _media(kind: str, sub: proto.Fields) -> Media:
    n = waproto.MEDIA_FIELDS[kind]
    return Media(
        url=_str(sub, n.url),
        direct_path=_str(sub, n.path),
        media_key=proto.first_bytes(sub, n.key),
        file_sha256=proto.first_bytes(sub, n.sha),
        file_enc_sha256=proto.first_bytes(sub, n.enc),
        file_length=proto.first_int(sub, n.length),
        mimetype=_str(sub, n.mimetype),
        caption=_str(sub, n.caption) if n.caption is not None else None,
        file_name=_str(sub, 8) if kind == "document" else None,
        title=_str(sub, 3) if kind == "document" else None,
        ptt=bool(proto.first_int(sub, 6, 0)) if kind == "audio" else False,
        seconds=proto.first_int(sub, 5) if kind in ("audio", "video") else None,
    )


def _context(sub: proto.Fields) -> Context | None:
    raw = proto.first_bytes(sub, CONTEXT_INFO)
    if raw is None:
        return None
    info = proto.decode(raw)
    quoted = proto.first_bytes(info, 3)
    quoted_text = decode_message(quoted).text if quoted is not None else None
    return Context(_str(info, 1), _str(info, 2), quoted_text, _str(info, 4))


def _key(sub: proto.Fields) -> Key | None:
    raw = proto.first_bytes(sub, 1)
    if raw is None:
        return None
    key = proto.decode(raw)
    return Key(_str(key, 1), bool(proto.first_int(key, 2, 0)), _str(key, 3), _str(key, 4))


def _str(fields: proto.Fields, number: int) -> str | None:
    value = proto.first_bytes(fields, number)
    return value.decode() if value is not None else None


def _double(fields: proto.Fields, number: int) -> float | None:
    value = proto.first_int(fields, number)  # fixed64 arrives as its little-endian integer
    return struct.unpack("<d", value.to_bytes(8, "little"))[0] if value is not None else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if v is not None and k != "fields"}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value
