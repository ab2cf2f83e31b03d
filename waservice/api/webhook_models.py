"""Bodies of the webhook routes (requests are msgspec Structs: their constraints are the rules)."""

from __future__ import annotations

from typing import Annotated, Literal

import attrs
import msgspec

from ..events.model import TYPES
from ..webhooks.rules import ALL, MAX_URL_LENGTH
from .models import SessionId

MAX_ID = 2**63 - 1  # SQLite's integers
EventType = Literal[(*TYPES, ALL)]  # type: ignore[valid-type]
WebhookUrl = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://",
        description=(
            "Where events are POSTed: http(s) with a host (localhost is fine); redirects are not followed."
        ),
        examples=["http://127.0.0.1:8080/whatsapp"],
    ),
]
Secret = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^whsec_[A-Za-z0-9+/]+={0,2}$",
        max_length=100,
        description="Signing secret, 'whsec_' + base64 of 24-64 bytes; generated when absent.",
    ),
]


class WebhookRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: WebhookUrl
    events: Annotated[
        list[EventType],
        msgspec.Meta(
            min_length=1,
            max_length=len(TYPES) + 1,
            description='Event types to deliver, or ["*"] for all.',
            examples=[["message.received", "session.status"]],
        ),
    ]
    session_id: Annotated[
        SessionId | None, msgspec.Meta(description="Only this session's events (absent: every session).")
    ] = None
    secret: Secret | None = None


class RedeliverRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    event_id: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1,
                le=MAX_ID,
                description="Send this event again (any status); absent: every dead delivery.",
            ),
        ]
        | None
    ) = None


MAX_PAGE = 500


class DeliveriesQuery(msgspec.Struct, forbid_unknown_fields=True):
    """Newest event first; `status` filters (`failed` = waiting for a retry)."""

    status: Literal["pending", "failed", "ok", "dead"] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)] = 50
    offset: Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)] = 0


@attrs.define
class WebhookView:
    id: str
    url: str
    events: list[str]
    session_id: str | None  # null: every session
    created_at: str  # ISO 8601, UTC
    source: str  # "api", or "config" (config.toml; change it there)


@attrs.define
class WebhookCreated:
    webhook: WebhookView
    secret: str  # shown this once: keep it to verify signatures
    success: bool = True


@attrs.define
class WebhookResponse:
    webhook: WebhookView
    success: bool = True


@attrs.define
class WebhooksResponse:
    webhooks: list[WebhookView]
    success: bool = True


@attrs.define
class DeliveryView:
    event_id: int
    event_type: str | None  # null once the event left the log
    session_id: str
    status: str  # pending, failed (a retry is scheduled), ok, dead
    attempts: int
    next_attempt_at: str | None  # ISO 8601, while pending or failed
    last_status_code: int | None
    last_error: str | None
    updated_at: str


@attrs.define
class DeliveriesResponse:
    deliveries: list[DeliveryView]
    total: int
    success: bool = True


@attrs.define
class RedeliverResponse:
    redelivered: int
    success: bool = True


@attrs.define
class WebhookDeleted:
    message: str = "Webhook deleted"
    success: bool = True
