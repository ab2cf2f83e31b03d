"""Which mimetypes each kind of media may have, and recognising a file's format from its bytes.

WhatsApp clients render by mimetype: an image sent as application/pdf shows as nothing at all, so a
mismatch is refused here rather than delivered broken.
"""

from __future__ import annotations

import mimetypes
import re

from ..engine.content import MediaKind
from ..errors import InvalidRequest

# type/subtype (RFC 6838 restricted names), optionally with parameters ("audio/ogg; codecs=opus").
_MIMETYPE = re.compile(
    r"(?P<type>[a-z0-9][a-z0-9!#$&^_.+-]{0,126})/(?P<subtype>[a-z0-9][a-z0-9!#$&^_.+-]{0,126})"
    r"(?P<params>(?:\s*;\s*[a-z0-9!#$&^_.+-]+=(?:[a-z0-9!#$&^_.+-]+|\"[^\"\\\r\n]*\"))*)\s*",
    re.IGNORECASE,
)
MAX_MIMETYPE_LENGTH = 255
# A voice note plays only as Opus in Ogg; stickers are WebP.
_VOICE = frozenset({"audio/ogg", "audio/opus"})
_EXPECTED: dict[str, str] = {
    "image": "an image/* type",
    "video": "a video/* type",
    "audio": "an audio/* type",
    "voice": "audio/ogg (Opus)",
    "sticker": "image/webp",
    "document": "any type",
}


def check_mimetype(value: str, kind: MediaKind) -> str:
    """The given mimetype, lowercased, if it is well formed and fits `kind`; else a 400."""
    match = _MIMETYPE.fullmatch(value) if len(value) <= MAX_MIMETYPE_LENGTH else None
    if match is None:
        raise InvalidRequest(f"invalid mimetype {value!r}: expected type/subtype, e.g. image/jpeg")
    essence = f"{match['type']}/{match['subtype']}".lower()
    if not fits(essence, kind):
        raise InvalidRequest(f"mimetype {essence} does not fit type '{kind}': it needs {_EXPECTED[kind]}")
    params = re.sub(r"\s*;\s*", "; ", match["params"]).strip()
    return f"{essence}{params}" if params else essence


def fits(essence: str, kind: MediaKind) -> bool:
    major = essence.split("/")[0]
    match kind:
        case "image":
            return major == "image"
        case "video":
            return major == "video"
        case "audio":
            return major == "audio"
        case "voice":
            return essence in _VOICE
        case "sticker":
            return essence == "image/webp"
        case _:
            return True


def sniff(head: bytes) -> str | None:
    """The format the first bytes of a file announce (the common media formats), if any."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/3gpp" if brand.startswith(b"3gp") else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    return None


def decide_mimetype(
    kind: MediaKind, given: str | None, head: bytes, file_name: str | None, served_as: str | None = None
) -> str:
    """The given mimetype (checked), else the one the bytes show, else the one a URL was served
    with or the file name suggests; refused when it does not fit `kind`."""
    if given is not None:
        return check_mimetype(given, kind)
    found = sniff(head)
    if found is None and served_as:
        essence = served_as.split(";")[0].strip().lower()
        found = essence if _MIMETYPE.fullmatch(essence) and essence != "application/octet-stream" else None
    if found is None and file_name:
        found = mimetypes.guess_type(file_name, strict=False)[0]
    found = found or "application/octet-stream"
    if not fits(found, kind):
        raise InvalidRequest(
            f"the file looks like {found}, which does not fit type '{kind}' ({_EXPECTED[kind]}); "
            "send another file, or set mimetype if it is right"
        )
    if kind == "voice":
        return "audio/ogg; codecs=opus"
    return found
