"""Request and response bodies. quart-schema documents them through msgspec.

Requests are msgspec Structs whose constraints are the API's rules, so the OpenAPI document states
exactly what the service enforces (id pattern and length, the number's digits, a non-empty message,
no unknown fields). Responses are attrs classes.
"""

from __future__ import annotations

from typing import Annotated, Literal

import attrs
import msgspec

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
OptionalSessionId = Annotated[
    SessionId | None,
    msgspec.Meta(description="Session id (null or absent: 'default')."),
]


class SessionRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    session_id: OptionalSessionId = DEFAULT_SESSION

    def __post_init__(self) -> None:
        if self.session_id is None:  # null means the default session, like an absent field
            self.session_id = DEFAULT_SESSION


class SendRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    number: PhoneNumber
    message: MessageText
    session_id: OptionalSessionId = DEFAULT_SESSION

    def __post_init__(self) -> None:
        if self.session_id is None:
            self.session_id = DEFAULT_SESSION


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
