"""Builders for ``waE2E.Message`` (serialized bytes), hand-encoded so the test process never imports
neonize. Field numbers are neonize 0.5.2's ``WAWebProtobufsE2E.proto``; ``test_wasim_contacts.py``
checks each builder against a real device's MessageEv.

Media builders carry metadata only (no upload happens): a device sees the message and its fields,
and a download would fail.
"""

from __future__ import annotations

import hashlib
import time
from typing import NamedTuple

from . import proto

# Top-level waE2E.Message fields.
CONVERSATION = 1
IMAGE = 3
CONTACT = 4
LOCATION = 5
EXTENDED_TEXT = 6
DOCUMENT = 7
AUDIO = 8
VIDEO = 9
PROTOCOL = 12
STICKER = 26
REACTION = 46

# ProtocolMessage.Type
REVOKE = 0
MESSAGE_EDIT = 14

CONTEXT_INFO = 17  # the same number in every message type that has one


class MediaFields(NamedTuple):
    """Field numbers of one media message type (None where it has no such field)."""

    url: int
    mimetype: int
    sha: int  # fileSHA256
    length: int  # fileLength
    key: int  # mediaKey
    enc: int  # fileEncSHA256
    path: int  # directPath
    caption: int | None


MEDIA_FIELDS = {
    "image": MediaFields(1, 2, 4, 5, 8, 9, 11, 3),
    "video": MediaFields(1, 2, 3, 4, 6, 11, 13, 7),
    "audio": MediaFields(1, 2, 3, 4, 7, 8, 9, None),
    "document": MediaFields(1, 2, 4, 5, 7, 9, 10, 20),
    "sticker": MediaFields(1, 5, 2, 9, 4, 3, 8, None),
}
MEDIA_MESSAGE = {"image": IMAGE, "video": VIDEO, "audio": AUDIO, "document": DOCUMENT, "sticker": STICKER}


def _message(number: int, body: bytes) -> bytes:
    return proto.encode([(number, body)])


def _context(reply_to: str | None, quoted_sender: str | None, quoted_text: str | None) -> bytes | None:
    """ContextInfo{stanzaID 1, participant 2, quotedMessage 3} of a reply, or None."""
    if reply_to is None:
        return None
    quoted = text(quoted_text) if quoted_text is not None else None
    return proto.encode([(1, reply_to), (2, quoted_sender), (3, quoted)])


def _key(chat_jid: str, msg_id: str, from_me: bool) -> bytes:
    """WACommon.MessageKey{remoteJID 1, fromMe 2, ID 3}."""
    return proto.encode([(1, chat_jid), (2, from_me), (3, msg_id)])


def text(body: str) -> bytes:
    """A plain text (``conversation``)."""
    return _message(CONVERSATION, body.encode())


def extended_text(
    body: str, reply_to: str | None = None, quoted_sender: str | None = None, quoted_text: str | None = None
) -> bytes:
    """``extendedTextMessage{text}``; with ``reply_to`` (a message id) a reply quoting it
    (``quoted_sender`` is the quoted message's author JID, e.g. ``"15550001111@s.whatsapp.net"``)."""
    context = _context(reply_to, quoted_sender, quoted_text)
    return _message(EXTENDED_TEXT, proto.encode([(1, body), (CONTEXT_INFO, context)]))


def _media_fields(url: str, mimetype: str, data: bytes | None, length: int | None) -> list:
    sha = hashlib.sha256(data).digest() if data is not None else hashlib.sha256(url.encode()).digest()
    size = length if length is not None else (len(data) if data is not None else 1024)
    return [url, mimetype, sha, size]


def image(
    url: str = "https://mmg.whatsapp.net/sim/image",
    mimetype: str = "image/jpeg",
    caption: str | None = None,
    data: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """``imageMessage{URL 1, mimetype 2, caption 3, fileSHA256 4, fileLength 5}``."""
    u, m, sha, size = _media_fields(url, mimetype, data, length)
    return _message(IMAGE, proto.encode([(1, u), (2, m), (3, caption), (4, sha), (5, size)]))


def video(
    url: str = "https://mmg.whatsapp.net/sim/video",
    mimetype: str = "video/mp4",
    caption: str | None = None,
    seconds: int | None = None,
    data: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """``videoMessage{URL 1, mimetype 2, fileSHA256 3, fileLength 4, seconds 5, caption 7}``."""
    u, m, sha, size = _media_fields(url, mimetype, data, length)
    return _message(VIDEO, proto.encode([(1, u), (2, m), (3, sha), (4, size), (5, seconds), (7, caption)]))


def audio(
    url: str = "https://mmg.whatsapp.net/sim/audio",
    mimetype: str = "audio/ogg; codecs=opus",
    ptt: bool = False,
    seconds: int | None = None,
    data: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """``audioMessage{URL 1, mimetype 2, fileSHA256 3, fileLength 4, seconds 5, PTT 6}``; ptt: voice note."""
    u, m, sha, size = _media_fields(url, mimetype, data, length)
    return _message(
        AUDIO, proto.encode([(1, u), (2, m), (3, sha), (4, size), (5, seconds), (6, True if ptt else None)])
    )


def document(
    file_name: str = "file.pdf",
    url: str = "https://mmg.whatsapp.net/sim/document",
    mimetype: str = "application/pdf",
    caption: str | None = None,
    data: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """``documentMessage{URL 1, mimetype 2, title 3, fileSHA256 4, fileLength 5, fileName 8, caption 20}``."""
    u, m, sha, size = _media_fields(url, mimetype, data, length)
    return _message(
        DOCUMENT,
        proto.encode([(1, u), (2, m), (3, file_name), (4, sha), (5, size), (8, file_name), (20, caption)]),
    )


def sticker(
    url: str = "https://mmg.whatsapp.net/sim/sticker",
    mimetype: str = "image/webp",
    data: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """``stickerMessage{URL 1, fileSHA256 2, mimetype 5, fileLength 9}``."""
    u, m, sha, size = _media_fields(url, mimetype, data, length)
    return _message(STICKER, proto.encode([(1, u), (2, sha), (5, m), (9, size)]))


def location(latitude: float, longitude: float, name: str | None = None, address: str | None = None) -> bytes:
    """``locationMessage{degreesLatitude 1, degreesLongitude 2 (doubles), name 3, address 4}``."""
    return _message(
        LOCATION, proto.encode([(1, float(latitude)), (2, float(longitude)), (3, name), (4, address)])
    )


def contact_card(display_name: str, phone: str) -> bytes:
    """``contactMessage{displayName 1, vcard 16}`` with a minimal vCard for ``phone``."""
    vcard = f"BEGIN:VCARD\nVERSION:3.0\nFN:{display_name}\nTEL;type=CELL;waid={phone}:+{phone}\nEND:VCARD"
    return _message(CONTACT, proto.encode([(1, display_name), (16, vcard)]))


def reaction(chat_jid: str, msg_id: str, emoji: str, from_me: bool = True) -> bytes:
    """``reactionMessage{key 1, text 2, senderTimestampMS 4}``; ``emoji=""`` removes a reaction.

    ``key`` names the reacted-to message: ``chat_jid`` is the chat as the reactor sees it, and
    ``from_me`` whether the reactor sent that message (False when reacting to the device's message).
    """
    key = _key(chat_jid, msg_id, from_me)
    return _message(REACTION, proto.encode([(1, key), (2, emoji), (4, int(time.time() * 1000))]))


def edit(chat_jid: str, msg_id: str, new_text: str) -> bytes:
    """``protocolMessage{key 1, type 2 = MESSAGE_EDIT, editedMessage 14, timestampMS 15}``: the
    sender edits its own message ``msg_id`` to ``new_text``."""
    body = proto.encode(
        [
            (1, _key(chat_jid, msg_id, True)),
            (2, MESSAGE_EDIT),
            (14, text(new_text)),
            (15, int(time.time() * 1000)),
        ]
    )
    return _message(PROTOCOL, body)


def revoke(chat_jid: str, msg_id: str) -> bytes:
    """``protocolMessage{key 1, type 2 = REVOKE}``: the sender deletes its message for everyone."""
    return _message(PROTOCOL, proto.encode([(1, _key(chat_jid, msg_id, True)), (2, REVOKE)]))


def uploaded_media(
    kind: str,
    url: str,
    direct_path: str,
    media_key: bytes,
    file_sha256: bytes,
    file_enc_sha256: bytes,
    file_length: int,
    mimetype: str,
    caption: str | None = None,
    file_name: str | None = None,
    ptt: bool = False,
) -> bytes:
    """An image/video/audio/document/sticker message for a file on the media host, with the real
    key and hashes (so a device can download it); ``kind="voice"`` is audio with ``PTT``."""
    if kind == "voice":
        kind, ptt = "audio", True
    n = MEDIA_FIELDS[kind]
    fields: list[tuple[int, proto.EncodeValue | None]] = [
        (n.url, url),
        (n.mimetype, mimetype),
        (n.sha, file_sha256),
        (n.length, file_length),
        (n.key, media_key),
        (n.enc, file_enc_sha256),
        (n.path, direct_path),
    ]
    if n.caption is not None:
        fields.append((n.caption, caption))
    if kind == "document":
        fields += [(3, file_name), (8, file_name)]  # title, fileName
    if kind == "audio" and ptt:
        fields.append((6, True))
    return _message(MEDIA_MESSAGE[kind], proto.encode(fields))
