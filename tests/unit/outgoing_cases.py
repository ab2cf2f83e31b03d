"""Outgoing content -> the protobuf whatsmeow sends, field by field (as whatsmeow's own builders).

Run by test_neonize_cases.py in a process of its own (importing neonize loads the Go library).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from neonize.proto.Neonize_pb2 import UploadResponse
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message, ProtocolMessage

from waservice.engine.content import ContactCard, Edit, Location, Media, Quote, Reaction, Revoke, Text
from waservice.engine.worker.outgoing import BuildError, build

OWN = "15550001111"
CAROL = "15557770000@s.whatsapp.net"
GROUP = "120363000000000001@g.us"
QUOTE = Quote(id="3EB0Q1", sender="15557770000:3@s.whatsapp.net", text="the question")


class Uploads:
    """Stands in for Go's Upload: records what it was given, answers like whatsmeow."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, int]] = []

    def __call__(self, data: bytes, media_type: int) -> UploadResponse:
        self.calls.append((data, media_type))
        return UploadResponse(
            url="https://mmg.example/o1/v/t62/x?oh=1",
            DirectPath="/o1/v/t62/x?oh=1",
            Handle="h",
            MediaKey=b"k" * 32,
            FileEncSHA256=b"e" * 32,
            FileSHA256=hashlib.sha256(data).digest(),
            FileLength=len(data),
        )


def no_upload(data: bytes, media_type: int) -> UploadResponse:
    raise AssertionError("nothing to upload")


def send(content, chat: str = CAROL, uploads=no_upload) -> Message:  # type: ignore[no-untyped-def]
    return build(chat, content, OWN, uploads)


def test_text_and_reply() -> None:
    assert send(Text(text="hi")) == Message(conversation="hi")
    reply = send(Text(text="the answer", reply_to=QUOTE)).extendedTextMessage
    assert reply.text == "the answer"
    assert reply.contextInfo.stanzaID == "3EB0Q1"
    assert reply.contextInfo.participant == "15557770000@s.whatsapp.net"  # no device
    assert reply.contextInfo.quotedMessage.conversation == "the question"
    unknown_author = send(Text(text="?", reply_to=Quote(id="3EB0Q2", sender=""))).extendedTextMessage
    assert not unknown_author.contextInfo.HasField("participant")
    assert unknown_author.contextInfo.quotedMessage.conversation == ""


def spool(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "spool"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    ("kind", "field", "media_type"),
    [
        ("image", "imageMessage", 0),
        ("video", "videoMessage", 1),
        ("audio", "audioMessage", 2),
        ("voice", "audioMessage", 2),
        ("document", "documentMessage", 3),
        ("sticker", "stickerMessage", 0),
    ],
)
def test_media_is_uploaded_from_the_spool_bytes(
    tmp_path: Path, kind: str, field: str, media_type: int
) -> None:
    data = b"\x89PNG\x00 bytes with a NUL"
    uploads = Uploads()
    content = Media(
        kind=kind,  # type: ignore[arg-type]
        path=spool(tmp_path, data),
        mimetype="application/x-test",
        size=len(data),
        caption="look",
        file_name="report.pdf",
        reply_to=QUOTE,
    )
    message = send(content, uploads=uploads)
    assert uploads.calls == [(data, media_type)]
    assert [f.name for f, _ in message.ListFields()] == [field]
    part = getattr(message, field)
    assert part.URL == "https://mmg.example/o1/v/t62/x?oh=1" and part.directPath == "/o1/v/t62/x?oh=1"
    assert part.mediaKey == b"k" * 32 and part.fileEncSHA256 == b"e" * 32
    assert part.fileSHA256 == hashlib.sha256(data).digest() and part.fileLength == len(data)
    assert part.mimetype == "application/x-test" and part.mediaKeyTimestamp > 1_700_000_000
    assert part.contextInfo.stanzaID == "3EB0Q1"
    if kind in ("image", "video", "document"):
        assert part.caption == "look"
    if kind == "document":
        assert part.fileName == part.title == "report.pdf"
    if field == "audioMessage":
        assert part.PTT is (kind == "voice")


def test_media_spool_problems_are_build_errors(tmp_path: Path) -> None:
    uploads = Uploads()
    missing = Media(kind="image", path=str(tmp_path / "gone"), mimetype="image/png", size=3)
    with pytest.raises(BuildError, match="unreadable"):
        send(missing, uploads=uploads)
    grown = Media(kind="image", path=spool(tmp_path, b"four"), mimetype="image/png", size=3)
    with pytest.raises(BuildError, match="4 bytes, expected 3"):
        send(grown, uploads=uploads)
    assert uploads.calls == []


def test_location_and_contact_card() -> None:
    place = send(
        Location(lat=4.6, lng=-74.08, name="Office", address="Cra 7", reply_to=QUOTE)
    ).locationMessage
    assert (place.degreesLatitude, place.degreesLongitude, place.name, place.address) == (
        4.6,
        -74.08,
        "Office",
        "Cra 7",
    )
    assert place.contextInfo.stanzaID == "3EB0Q1"
    vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Bob\nEND:VCARD"
    card = send(ContactCard(name="Bob", vcard=vcard)).contactMessage
    assert card.displayName == "Bob" and card.vcard == vcard and not card.HasField("contextInfo")


def test_reaction_key_like_build_message_key() -> None:
    mine = send(Reaction(message_id="3EB0M", sender=f"{OWN}@s.whatsapp.net", from_me=True, emoji="👍"))
    key = mine.reactionMessage.key
    assert (key.remoteJID, key.fromMe, key.ID, key.participant) == (CAROL, True, "3EB0M", "")
    assert mine.reactionMessage.text == "👍" and mine.reactionMessage.senderTimestampMS > 1_700_000_000_000
    theirs = send(Reaction(message_id="3EB0N", sender=CAROL, from_me=False, emoji=""))
    assert theirs.reactionMessage.key.fromMe is False and theirs.reactionMessage.key.participant == ""
    assert theirs.reactionMessage.HasField("text") and theirs.reactionMessage.text == ""  # removal
    in_group = send(
        Reaction(message_id="3EB0G", sender="15557770000:2@s.whatsapp.net", from_me=False, emoji="x"), GROUP
    )
    assert in_group.reactionMessage.key.participant == CAROL
    assert in_group.reactionMessage.key.remoteJID == GROUP


def test_edit_like_build_edit() -> None:
    edit = send(Edit(message_id="3EB0E", text="fixed")).editedMessage.message.protocolMessage
    assert edit.type == ProtocolMessage.MESSAGE_EDIT
    assert (edit.key.fromMe, edit.key.ID, edit.key.remoteJID) == (True, "3EB0E", CAROL)
    assert edit.editedMessage.conversation == "fixed" and edit.timestampMS > 1_700_000_000_000


def test_revoke_own_message_or_an_admin_revoke_in_a_group() -> None:
    own = send(Revoke(message_id="3EB0R", sender=f"{OWN}@s.whatsapp.net")).protocolMessage
    assert own.type == ProtocolMessage.REVOKE and own.HasField("type")
    assert (own.key.fromMe, own.key.ID, own.key.remoteJID, own.key.participant) == (True, "3EB0R", CAROL, "")
    admin = send(Revoke(message_id="3EB0S", sender=CAROL), GROUP).protocolMessage
    assert (admin.key.fromMe, admin.key.participant, admin.key.remoteJID) == (False, CAROL, GROUP)
    with pytest.raises(BuildError, match="own number"):
        build(CAROL, Revoke(message_id="3EB0R", sender=CAROL), None, no_upload)
