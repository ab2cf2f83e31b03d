"""Request and response bodies. quart-schema documents them through msgspec.

Requests are msgspec Structs whose constraints are the API's rules, so the OpenAPI document states
exactly what the service enforces (id pattern and length, the number's digits, a non-empty message,
no unknown fields). Responses are attrs classes.
"""

from __future__ import annotations

from typing import Annotated, Literal

import attrs
import msgspec

from ..engine.content import MediaKind, TypingState
from ..ids import DEFAULT_SESSION, MAX_SESSION_ID_LENGTH, SESSION_ID_PATTERN

# WhatsApp Web's compose box (`MAX_TXT_MSG_SIZE`, a JavaScript maxLength) counts UTF-16 code units.
MAX_MESSAGE_UTF16_UNITS = 65_536
# The digits of an E.164 number (7-15, no leading 0), with the separators people paste.
PHONE_NUMBER_PATTERN = r"^\+?[ ().-]*[1-9](?:[ ().-]*[0-9]){6,14}[ ().-]*$"

SessionId = Annotated[
    str,
    msgspec.Meta(
        pattern=f"^{SESSION_ID_PATTERN.pattern}$",
        min_length=1,
        max_length=MAX_SESSION_ID_LENGTH,
        description="Session id: 1-64 characters from letters, digits, '_' and '-'.",
        examples=["default"],
    ),
]
PhoneNumber = Annotated[
    str,
    msgspec.Meta(
        pattern=PHONE_NUMBER_PATTERN,
        description=(
            "Recipient's phone number with its country code, 7-15 digits (e.g. 573001234567 for "
            "Colombia, 14155552671 for the USA); '+', spaces, dots, dashes and brackets are ignored. "
            "It must be a number that libphonenumber considers valid for its country."
        ),
        examples=["573001234567"],
    ),
]
MessageText = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_MESSAGE_UTF16_UNITS,
        description=(
            "Text to send: at least one visible character (not only spaces, control or invisible "
            f"characters); at most {MAX_MESSAGE_UTF16_UNITS} UTF-16 code units, as WhatsApp counts "
            "(an emoji outside the BMP counts 2); no lone surrogates."
        ),
        examples=["Hello from the API!"],
    ),
]
MAX_NUMBERS_CHECKED = 50
MAX_READ_IDS = 100
OptionalSessionId = Annotated[
    SessionId | None,
    msgspec.Meta(description="Session id (null or absent: 'default')."),
]


# A full JID: a person's (<digits>@s.whatsapp.net, or @lid as events show some people) or a group's
# (<digits>[-<digits>]@g.us: old groups' ids carry their creator and a timestamp; a person's never has a
# dash). A chat is such a JID or a phone number.
JID_PATTERN = r"[0-9]{1,20}@(?:s\.whatsapp\.net|lid)|[0-9]{1,20}(?:-[0-9]{1,20})?@g\.us"
CHAT_PATTERN = rf"^(?:{PHONE_NUMBER_PATTERN[1:-1]}|{JID_PATTERN})$"
ChatId = Annotated[
    str,
    msgspec.Meta(
        pattern=CHAT_PATTERN,
        max_length=64,
        description=(
            "The chat: a phone number with country code (as `number`), or a full JID: a person's "
            "`<digits>@s.whatsapp.net` (or `<digits>@lid`, as events show some people), a group's "
            "`<id>@g.us`."
        ),
        examples=["573001234567", "120363025246125888@g.us"],
    ),
]
MessageId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
        description="A WhatsApp message id, as a send's `result.id` or a message.received event gives it.",
        examples=["3EB0C127D7BACC83D6A1"],
    ),
]
ReplyTo = Annotated[
    MessageId | None,
    msgspec.Meta(description="Quote this message (its id; one the service sent or received): a reply."),
]


def _one_recipient(number: str | None, chat: str | None) -> None:
    """msgspec turns this ValueError into a 400 naming the problem."""
    if (number is None) == (chat is None):
        raise ValueError("give exactly one of `chat` and `number`")


class SessionRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    session_id: OptionalSessionId = DEFAULT_SESSION

    def __post_init__(self) -> None:
        if self.session_id is None:  # null means the default session, like an absent field
            self.session_id = DEFAULT_SESSION


class SendRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The recipient is exactly one of `number` and `chat`."""

    message: MessageText
    number: PhoneNumber | None = None
    chat: ChatId | None = None
    reply_to: ReplyTo = None
    check_number: Annotated[
        bool | None,
        msgspec.Meta(
            description=(
                "Ask WhatsApp first whether `number` is on it, and answer 400 instead of sending "
                "when it is not (null: the messages.check_number setting)."
            )
        ),
    ] = None
    session_id: OptionalSessionId = DEFAULT_SESSION

    def __post_init__(self) -> None:
        if self.session_id is None:
            self.session_id = DEFAULT_SESSION
        _one_recipient(self.number, self.chat)


class _SessionBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    session_id: OptionalSessionId = DEFAULT_SESSION

    def __post_init__(self) -> None:
        if self.session_id is None:
            self.session_id = DEFAULT_SESSION


class _Recipient(_SessionBody, kw_only=True):
    """A send's recipient: `chat`, or `number` as /send takes it."""

    number: PhoneNumber | None = None
    chat: ChatId | None = None
    reply_to: ReplyTo = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_recipient(self.number, self.chat)


class PairCodeRequest(_SessionBody, kw_only=True):
    number: Annotated[
        PhoneNumber,
        msgspec.Meta(description="The phone number of the WhatsApp account that will type the code."),
    ]


class CheckNumbersRequest(_SessionBody, kw_only=True):
    numbers: Annotated[
        list[PhoneNumber],
        msgspec.Meta(
            min_length=1,
            max_length=MAX_NUMBERS_CHECKED,
            description="1-50 phone numbers.",
            examples=[["573001234567", "14155552671"]],
        ),
    ]


MediaType = Annotated[
    MediaKind,
    msgspec.Meta(description="voice: a voice note (Ogg Opus); sticker: a WebP image.", examples=["image"]),
]
Caption = Annotated[
    str, msgspec.Meta(max_length=MAX_MESSAGE_UTF16_UNITS, description="Shown under the media.")
]
FileName = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=255, description="The name a document shows; not a path."),
]
Mimetype = Annotated[
    str,
    msgspec.Meta(
        max_length=255,
        description=(
            "type/subtype, fitting `type` (image/* for image, video/*, audio/*, audio/ogg for voice, "
            "image/webp for sticker, anything for document). Absent: recognised from the bytes."
        ),
        examples=["image/jpeg"],
    ),
]


class SendMediaRequest(_Recipient, kw_only=True):
    """The recipient is exactly one of `chat` and `number`. The file is exactly one of `url` and
    `data` in JSON, or, as multipart/form-data, a part named `file` (the other fields as parts)."""

    type: MediaType
    caption: Caption | None = None
    file_name: FileName | None = None
    mimetype: Mimetype | None = None
    url: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=2048,
                description="http(s) URL the service downloads the file from (public addresses only).",
            ),
        ]
        | None
    ) = None
    data: Annotated[str | None, msgspec.Meta(description="The file in base64 (or a data: URL).")] = None


class SendLocationRequest(_Recipient, kw_only=True):
    """The recipient is exactly one of `chat` and `number`."""

    lat: Annotated[float, msgspec.Meta(ge=-90, le=90, description="Latitude in degrees.", examples=[4.6097])]
    lng: Annotated[
        float, msgspec.Meta(ge=-180, le=180, description="Longitude in degrees.", examples=[-74.0817])
    ]
    name: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    address: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


class SendContactRequest(_Recipient, kw_only=True):
    """The recipient is exactly one of `chat` and `number`."""

    name: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=256, description="The contact's name.", examples=["Ana Gómez"]),
    ]
    phone: Annotated[PhoneNumber, msgspec.Meta(description="The contact's phone number, with country code.")]


class _InChat(_SessionBody, kw_only=True):
    chat: ChatId


class ReactRequest(_InChat, kw_only=True):
    message_id: MessageId
    emoji: Annotated[
        str,
        msgspec.Meta(
            max_length=32, description='One emoji; "" removes this account\'s reaction.', examples=["👍"]
        ),
    ]


class EditRequest(_InChat, kw_only=True):
    message_id: Annotated[MessageId, msgspec.Meta(description="One of this account's own messages.")]
    message: MessageText


class DeleteMessageRequest(_InChat, kw_only=True):
    message_id: Annotated[
        MessageId,
        msgspec.Meta(description="This account's own message (or, as a group admin, anyone's in the group)."),
    ]


class ReadRequest(_InChat, kw_only=True):
    message_ids: Annotated[
        list[MessageId],
        msgspec.Meta(min_length=1, max_length=MAX_READ_IDS, examples=[["3EB0C127D7BACC83D6A1"]]),
    ]


class TypingRequest(_InChat, kw_only=True):
    state: Annotated[
        TypingState,
        msgspec.Meta(
            description="composing (typing), recording (a voice note) or paused (stop).",
            examples=["composing"],
        ),
    ]


class SessionQuery(msgspec.Struct, forbid_unknown_fields=True):
    session_id: Annotated[SessionId, msgspec.Meta(description="Session id (absent: 'default').")] = (
        DEFAULT_SESSION
    )


@attrs.define
class ErrorResponse:
    error: str
    success: bool = False


@attrs.define
class HealthResponse:
    status: str = "ok"


@attrs.define
class SessionView:
    session_id: str
    state: str
    phone_number: str | None
    has_qr: bool
    reconnect_attempts: int
    last_error: str | None
    state_changed_at: str  # ISO 8601, UTC
    queue_depth: int = 0  # messages in the session's send queue: waiting, or being sent
    node: str | None = None  # several nodes: the node that runs it (null: none does right now)


@attrs.define
class SessionsQuery:
    """Without parameters: every session. `state` filters, then `offset` and `limit` take a page."""

    state: Literal["disconnected", "connecting", "qr_ready", "connected", "error", "failed"] | None = None
    offset: int = 0
    limit: int | None = None


@attrs.define
class SessionsResponse:
    sessions: list[SessionView]
    total: int  # sessions matching `state`, before offset and limit
    success: bool = True


@attrs.define
class StatusResponse(SessionView):
    success: bool = True


@attrs.define
class ActionResponse:
    session_id: str
    message: str
    success: bool = True


@attrs.define
class DeleteResponse:
    message: str
    success: bool = True
    unlinked: bool = False  # the device was unlinked from the phone (false: it had none, or see warning)
    warning: str | None = None  # what could not be done (unlinking, deleting files) and what to do


@attrs.define
class QrResponse:
    session_id: str
    qr: str  # data:image/png;base64,...
    code: str  # the raw string the phone scans
    success: bool = True


@attrs.define
class SendResult:
    id: str
    timestamp: int
    to: str


@attrs.define
class SendResponse:
    session_id: str
    message: str
    result: SendResult
    success: bool = True


@attrs.define
class PairCodeResponse:
    session_id: str
    code: str  # "ABCD-EFGH": typed on the phone under Linked devices > Link with phone number
    success: bool = True


@attrs.define
class NumberCheckView:
    number: str
    on_whatsapp: bool
    jid: str | None  # the account's JID when it is on WhatsApp


@attrs.define
class CheckNumbersResponse:
    session_id: str
    results: list[NumberCheckView]
    success: bool = True
