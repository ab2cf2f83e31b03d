"""Request and response bodies (attrs classes; quart-schema documents them through msgspec)."""

from __future__ import annotations

from typing import Literal

import attrs

from ..sessions.ids import DEFAULT_SESSION


@attrs.define
class SessionRequest:
    session_id: str = DEFAULT_SESSION


@attrs.define
class SessionQuery:
    session_id: str | None = None


@attrs.define
class SendRequest:
    number: str
    message: str
    session_id: str = DEFAULT_SESSION


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
