"""neonize events -> activities, on protobufs built with neonize's own classes (as Go sends them).

Run by test_neonize_cases.py in a process of its own (importing neonize loads the Go library).
"""

from __future__ import annotations

import pytest
from neonize.events import (
    CallOfferEv,
    ChatPresenceEv,
    HistorySyncEv,
    MessageEv,
    PresenceEv,
    ReceiptEv,
    UndecryptableMessageEv,
)
from neonize.proto.Neonize_pb2 import (
    JID,
    BasicCallMeta,
    ChatPresence,
    MessageInfo,
    MessageSource,
    Receipt,
)
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    AudioMessage,
    ContactMessage,
    ContextInfo,
    DocumentMessage,
    ExtendedTextMessage,
    FutureProofMessage,
    ImageMessage,
    LocationMessage,
    Message,
    ProtocolMessage,
    ReactionMessage,
    SenderKeyDistributionMessage,
)
from neonize.proto.waHistorySync.WAWebProtobufsHistorySync_pb2 import (
    Conversation,
    HistorySync,
    HistorySyncMsg,
    PhoneNumberToLIDMapping,
)
from neonize.proto.waWeb.WAWebProtobufsWeb_pb2 import WebMessageInfo

from waservice.engine.worker.normalize import GO_ZERO_TIME, Normalizer, PhoneBook
from waservice.events.model import Activity

OWN = "15550001111"
ALICE_LID, ALICE = "111222333444555", "15557770000"
BOB_LID, BOB = "999888777666555", "15558880000"
GROUP = "120363000000000001"
RECEIVED = 1_800_000_000.25


def lid(user: str, device: int = 0) -> JID:
    return JID(User=user, Server="lid", Device=device)


def pn(user: str) -> JID:
    return JID(User=user, Server="s.whatsapp.net")


def group() -> JID:
    return JID(User=GROUP, Server="g.us")


def normalizer(lookup=None, history_messages: bool = False) -> Normalizer:
    n = Normalizer("s1", PhoneBook(), lookup, history_messages)
    n.own_phone = OWN
    return n


def from_alice(message: Message, *, id: str = "3EB0A1", ms: int = 1_800_000_000_123, **source) -> MessageEv:
    fields = {"Chat": lid(ALICE_LID), "Sender": lid(ALICE_LID), "SenderAlt": pn(ALICE), "AddressingMode": 2}
    fields.update(source)
    info = MessageInfo(MessageSource=MessageSource(**fields), ID=id, Timestamp=ms, Pushname="Alice")
    return MessageEv(Info=info, Message=message)


def one(activities: list[Activity]) -> Activity:
    assert len(activities) == 1, activities
    return activities[0]


def test_text_from_a_lid_contact_is_reported_with_the_phone_number() -> None:
    activity = one(normalizer().activities(from_alice(Message(conversation="hi there")), RECEIVED))
    assert activity.type == "message.received" and activity.session_id == "s1"
    assert activity.key == "3EB0A1"
    assert activity.timestamp == 1_800_000_000.123  # milliseconds in, seconds out
    assert activity.received == RECEIVED
    assert activity.data == {
        "message_id": "3EB0A1",
        "chat": ALICE,
        "chat_jid": f"{ALICE_LID}@lid",
        "from": ALICE,
        "from_jid": f"{ALICE_LID}@lid",
        "from_me": False,
        "is_group": False,
        "push_name": "Alice",
        "kind": "text",
        "text": "hi there",
        "quoted_message_id": None,
        "media": None,
        "location": None,
        "contact": None,
    }


def test_a_reply_carries_the_quoted_id() -> None:
    reply = ExtendedTextMessage(
        text="yes", contextInfo=ContextInfo(stanzaID="3EB0Q", participant=f"{OWN}@s.whatsapp.net")
    )
    data = one(normalizer().activities(from_alice(Message(extendedTextMessage=reply)), RECEIVED)).data
    assert data["kind"] == "text" and data["text"] == "yes" and data["quoted_message_id"] == "3EB0Q"


@pytest.mark.parametrize(
    ("message", "kind", "media", "text"),
    [
        (
            Message(
                imageMessage=ImageMessage(
                    mimetype="image/jpeg", fileLength=2048, fileSHA256=b"\x01\xab", caption="look"
                )
            ),
            "image",
            {"mimetype": "image/jpeg", "size": 2048, "file_name": None, "sha256": "01ab", "seconds": None},
            "look",
        ),
        (
            Message(
                audioMessage=AudioMessage(
                    mimetype="audio/ogg; codecs=opus", fileLength=9, seconds=4, PTT=True
                )
            ),
            "voice",
            {
                "mimetype": "audio/ogg; codecs=opus",
                "size": 9,
                "file_name": None,
                "sha256": None,
                "seconds": 4,
            },
            None,
        ),
        (
            Message(audioMessage=AudioMessage(mimetype="audio/mpeg", seconds=200)),
            "audio",
            {"mimetype": "audio/mpeg", "size": None, "file_name": None, "sha256": None, "seconds": 200},
            None,
        ),
        (
            # A document with a caption comes wrapped; whatsmeow unwraps live ones, history keeps the wrapper.
            Message(
                documentWithCaptionMessage=FutureProofMessage(
                    message=Message(
                        documentMessage=DocumentMessage(
                            mimetype="application/pdf",
                            fileName="q3.pdf",
                            fileLength=70000,
                            caption="the report",
                        )
                    )
                )
            ),
            "document",
            {
                "mimetype": "application/pdf",
                "size": 70000,
                "file_name": "q3.pdf",
                "sha256": None,
                "seconds": None,
            },
            "the report",
        ),
    ],
    ids=["image", "voice", "audio", "document"],
)
def test_media_is_reported_as_metadata(message: Message, kind: str, media: dict, text: str | None) -> None:
    data = one(normalizer().activities(from_alice(message), RECEIVED)).data
    assert data["kind"] == kind and data["media"] == media and data["text"] == text


def test_media_keeps_the_private_attachment_download_needs() -> None:
    image = ImageMessage(
        URL="https://mmg.example/x",
        directPath="/v/t62/x?ccb=1",
        mediaKey=b"k" * 32,
        fileSHA256=b"s" * 32,
        fileEncSHA256=b"e" * 32,
        fileLength=5,
        mimetype="image/jpeg",
        caption="a cat",
        JPEGThumbnail=b"t" * 20_000,
        contextInfo=ContextInfo(stanzaID="3EB0Q", quotedMessage=Message(conversation="quoted")),
    )
    activity = one(normalizer().activities(from_alice(Message(imageMessage=image)), RECEIVED))
    assert activity.attachment is not None
    kept = Message.FromString(activity.attachment)
    assert kept.imageMessage.mediaKey == b"k" * 32 and kept.imageMessage.directPath == "/v/t62/x?ccb=1"
    assert not kept.imageMessage.HasField("contextInfo")  # the quoted message is not needed
    assert not kept.imageMessage.HasField("JPEGThumbnail") and len(activity.attachment) < 300
    assert "attachment" not in str(activity.data) and "mediaKey" not in str(activity.data)
    # Unwrapped, like the metadata: a captioned document comes inside a wrapper.
    document = Message(
        documentWithCaptionMessage=FutureProofMessage(
            message=Message(documentMessage=DocumentMessage(fileName="q3.pdf", mediaKey=b"d" * 32))
        )
    )
    activity = one(normalizer().activities(from_alice(document, id="3EB0A3"), RECEIVED))
    assert activity.attachment is not None
    assert Message.FromString(activity.attachment).documentMessage.mediaKey == b"d" * 32
    text = one(normalizer().activities(from_alice(Message(conversation="hi"), id="3EB0A4"), RECEIVED))
    assert text.attachment is None


def test_location_and_contact() -> None:
    place = Message(
        locationMessage=LocationMessage(
            degreesLatitude=4.6, degreesLongitude=-74.08, name="Office", address="Cra 7"
        )
    )
    data = one(normalizer().activities(from_alice(place), RECEIVED)).data
    assert data["kind"] == "location"
    assert data["location"] == {"lat": 4.6, "lng": -74.08, "name": "Office", "address": "Cra 7"}
    card = Message(contactMessage=ContactMessage(displayName="Bob", vcard="BEGIN:VCARD\nEND:VCARD"))
    data = one(normalizer().activities(from_alice(card, id="3EB0A2"), RECEIVED)).data
    assert data["kind"] == "contact" and data["contact"] == {"name": "Bob", "vcard": "BEGIN:VCARD\nEND:VCARD"}


def test_an_unknown_kind_is_still_a_message_but_bookkeeping_alone_is_not() -> None:
    poll = Message()
    poll.pollCreationMessage.name = "Lunch?"
    assert one(normalizer().activities(from_alice(poll), RECEIVED)).data["kind"] == "unknown"
    keys_only = Message(senderKeyDistributionMessage=SenderKeyDistributionMessage(groupID="g"))
    assert normalizer().activities(from_alice(keys_only), RECEIVED) == []


def test_own_message_from_the_phone_is_from_me_with_the_recipient_as_chat() -> None:
    event = from_alice(
        Message(conversation="sent from my phone"),
        id="3EB0ME",
        Chat=lid(ALICE_LID),
        RecipientAlt=pn(ALICE),
        Sender=lid("5550001", 0),
        SenderAlt=pn(OWN),
        IsFromMe=True,
    )
    data = one(normalizer().activities(event, RECEIVED)).data
    assert data["from_me"] is True and data["from"] == OWN and data["chat"] == ALICE


def test_group_message() -> None:
    event = from_alice(
        Message(conversation="hello all"),
        Chat=group(),
        IsGroup=True,
        Sender=lid(BOB_LID, 7),
        SenderAlt=pn(BOB),
    )
    data = one(normalizer().activities(event, RECEIVED)).data
    assert data["is_group"] is True
    assert data["chat"] == data["chat_jid"] == f"{GROUP}@g.us"
    assert data["from"] == BOB and data["from_jid"] == f"{BOB_LID}@lid"  # no device suffix


def test_edit_revoke_and_reaction_point_at_the_original_message() -> None:
    n = normalizer()
    key = MessageKey(remoteJID=f"{ALICE_LID}@lid", fromMe=False, ID="3EB0ORIG")
    edit = Message(
        protocolMessage=ProtocolMessage(
            key=key, type=ProtocolMessage.MESSAGE_EDIT, editedMessage=Message(conversation="fixed")
        )
    )
    edited = one(n.activities(from_alice(edit, id="3EB0E1"), RECEIVED))
    assert edited.type == "message.edited" and edited.key == "3EB0E1"
    assert (
        edited.data["message_id"] == "3EB0ORIG"
        and edited.data["text"] == "fixed"
        and edited.data["from"] == ALICE
    )
    revoke = Message(protocolMessage=ProtocolMessage(key=key, type=ProtocolMessage.REVOKE))
    deleted = one(n.activities(from_alice(revoke, id="3EB0D1"), RECEIVED))
    assert (
        deleted.type == "message.deleted"
        and deleted.key == "3EB0D1"
        and deleted.data["message_id"] == "3EB0ORIG"
    )
    react = one(
        n.activities(
            from_alice(Message(reactionMessage=ReactionMessage(key=key, text="👍")), id="3EB0R1"), RECEIVED
        )
    )
    assert (
        react.type == "message.reaction"
        and react.data["emoji"] == "👍"
        and react.data["message_id"] == "3EB0ORIG"
    )
    removed = one(
        n.activities(
            from_alice(Message(reactionMessage=ReactionMessage(key=key, text="")), id="3EB0R2"), RECEIVED
        )
    )
    assert removed.data["emoji"] == ""


def test_protocol_messages_without_a_type_or_of_other_types_are_not_events() -> None:
    n = normalizer()
    untyped = Message(
        protocolMessage=ProtocolMessage(key=MessageKey(ID="X"))
    )  # REVOKE is 0: unset must not read as it
    assert n.activities(from_alice(untyped), RECEIVED) == []
    notice = Message(protocolMessage=ProtocolMessage(type=ProtocolMessage.HISTORY_SYNC_NOTIFICATION))
    assert n.activities(from_alice(notice), RECEIVED) == []


def test_receipts_use_the_phone_book_fed_by_messages() -> None:
    n = normalizer(lookup=lambda jid: pytest.fail("looked up a LID it had seen"))
    n.activities(from_alice(Message(conversation="hi")), RECEIVED)  # teaches ALICE_LID -> ALICE
    source = MessageSource(Chat=lid(ALICE_LID), Sender=lid(ALICE_LID))
    event = ReceiptEv(
        MessageSource=source, MessageIDs=["3EB0S1", "3EB0S2"], Timestamp=1_800_000_100, Type=Receipt.READ
    )
    acks = n.activities(event, RECEIVED)
    assert [a.key for a in acks] == [f"3EB0S1:read:{ALICE}", f"3EB0S2:read:{ALICE}"]
    assert all(a.type == "message.ack" and a.timestamp == 1_800_000_100 for a in acks)  # seconds
    assert acks[0].data == {
        "message_id": "3EB0S1",
        "chat": ALICE,
        "chat_jid": f"{ALICE_LID}@lid",
        "from": ALICE,
        "from_jid": f"{ALICE_LID}@lid",
        "status": "read",
        "timestamp": "2027-01-15T08:01:40.000Z",
    }


def test_receipt_types() -> None:
    n = normalizer()
    source = MessageSource(Chat=pn(BOB), Sender=pn(BOB))

    def status(**fields) -> list[str]:
        return [
            a.data["status"]
            for a in n.activities(ReceiptEv(MessageSource=source, MessageIDs=["I"], **fields), RECEIVED)
        ]

    assert status() == ["delivered"]  # unset Type is a delivery receipt
    assert status(Type=Receipt.DELIVERED) == ["delivered"]
    assert status(Type=Receipt.INACTIVE) == ["delivered"]
    assert status(Type=Receipt.PLAYED) == ["played"]
    for other in (
        Receipt.READ_SELF,
        Receipt.PLAYED_SELF,
        Receipt.SENDER,
        Receipt.RETRY,
        Receipt.SERVER_ERROR,
    ):
        assert status(Type=other) == []


def test_an_unknown_lid_is_asked_of_whatsmeow_once_then_remembered() -> None:
    asked: list[JID] = []

    def lookup(jid: JID) -> str | None:
        asked.append(jid)
        return BOB if jid.User == BOB_LID else None

    n = normalizer(lookup)
    typing = ChatPresenceEv(
        MessageSource=MessageSource(Chat=lid(BOB_LID), Sender=lid(BOB_LID, 3)), State=ChatPresence.COMPOSING
    )
    for _ in range(2):
        data = one(n.activities(typing, RECEIVED)).data
        assert data["from"] == data["chat"] == BOB
    (asked_for,) = asked  # once, without the device, ready for Go (proto2: every required field)
    assert (asked_for.User, asked_for.Server, asked_for.Device) == (BOB_LID, "lid", 0)
    assert asked_for.IsInitialized()
    stranger = ChatPresenceEv(
        MessageSource=MessageSource(Chat=lid("42"), Sender=lid("42")), State=ChatPresence.PAUSED
    )
    data = one(n.activities(stranger, RECEIVED)).data
    assert data["from"] is None and data["from_jid"] == "42@lid" and data["state"] == "paused"


def test_typing_states() -> None:
    n = normalizer()
    source = MessageSource(Chat=pn(BOB), Sender=pn(BOB))

    def state(**fields) -> str:
        return one(n.activities(ChatPresenceEv(MessageSource=source, **fields), RECEIVED)).data["state"]

    assert state(State=ChatPresence.COMPOSING, Media=ChatPresence.TEXT) == "composing"
    assert state(State=ChatPresence.COMPOSING, Media=ChatPresence.AUDIO) == "recording"
    assert state(State=ChatPresence.PAUSED) == "paused"
    activity = one(n.activities(ChatPresenceEv(MessageSource=source, State=ChatPresence.PAUSED), RECEIVED))
    assert activity.type == "chat.typing" and activity.key is None and activity.timestamp == RECEIVED


def test_presence_with_go_zero_time_has_no_last_seen() -> None:
    n = normalizer()
    gone = one(n.activities(PresenceEv(From=pn(BOB), Unavailable=True, LastSeen=GO_ZERO_TIME), RECEIVED))
    assert gone.type == "presence"
    assert gone.data == {
        "from": BOB,
        "from_jid": f"{BOB}@s.whatsapp.net",
        "available": False,
        "last_seen": None,
    }
    seen = one(n.activities(PresenceEv(From=pn(BOB), Unavailable=True, LastSeen=1_800_000_000), RECEIVED))
    assert seen.data["last_seen"] == "2027-01-15T08:00:00.000Z"
    assert one(n.activities(PresenceEv(From=pn(BOB)), RECEIVED)).data["available"] is True


def test_call_offer() -> None:
    meta = BasicCallMeta(
        callID="CALL1", timestamp=1_800_000_000, callCreator=lid(ALICE_LID), callCreatorAlt=pn(ALICE)
    )
    getattr(meta, "from").CopyFrom(lid(ALICE_LID))
    activity = one(normalizer().activities(CallOfferEv(basicCallMeta=meta), RECEIVED))
    assert activity.type == "call.received" and activity.key == "call:CALL1"
    assert activity.data == {
        "call_id": "CALL1",
        "from": ALICE,
        "from_jid": f"{ALICE_LID}@lid",
        "timestamp": "2027-01-15T08:00:00.000Z",
    }


def test_undecryptable_message_is_not_an_event() -> None:
    info = MessageInfo(MessageSource=MessageSource(Chat=lid(ALICE_LID), Sender=lid(ALICE_LID)), ID="3EB0U")
    assert normalizer().activities(UndecryptableMessageEv(Info=info), RECEIVED) == []


def history(messages: int) -> HistorySyncEv:
    items = [
        HistorySyncMsg(
            message=WebMessageInfo(
                key=MessageKey(remoteJID=f"{ALICE_LID}@lid", fromMe=i % 2 == 1, ID=f"H{i}"),
                message=Message(conversation=f"old {i}"),
                messageTimestamp=1_700_000_000 + i,
            )
        )
        for i in range(messages)
    ]
    sync = HistorySync(
        syncType=HistorySync.RECENT,
        conversations=[Conversation(ID=f"{ALICE_LID}@lid", messages=items)],
        phoneNumberToLidMappings=[
            PhoneNumberToLIDMapping(pnJID=f"{ALICE}@s.whatsapp.net", lidJID=f"{ALICE_LID}@lid")
        ],
    )
    return HistorySyncEv(Data=sync)


def test_history_sync_is_a_count_by_default() -> None:
    activity = one(normalizer().activities(history(3), RECEIVED))
    assert activity.type == "history.sync" and activity.data == {
        "sync_type": "RECENT",
        "count": 3,
        "messages": None,
    }


def test_history_sync_messages_when_configured_in_chunks() -> None:
    n = normalizer(history_messages=True)
    chunks = n.activities(history(501), RECEIVED)
    assert [c.data["count"] for c in chunks] == [500, 1]
    first = chunks[0].data["messages"][0]
    assert first["message_id"] == "H0" and first["text"] == "old 0"
    assert first["chat"] == first["from"] == ALICE  # the sync's own LID table
    own = chunks[0].data["messages"][1]
    assert own["from_me"] is True and own["from"] == OWN


def test_a_message_the_normaliser_fails_on_is_still_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(message: Message) -> None:
        raise ValueError("a shape nobody foresaw")

    monkeypatch.setattr("waservice.engine.worker.normalize.message_content", broken)
    activity = one(normalizer().activities(from_alice(Message(conversation="hi")), RECEIVED))
    assert activity.key == "3EB0A1" and activity.data["kind"] == "unknown"
    assert activity.data["from_jid"] == f"{ALICE_LID}@lid" and activity.data["text"] is None
