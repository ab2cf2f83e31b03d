"""Test-only routes that script the fake engine; registered only when `engine = "fake"`."""

from __future__ import annotations

import base64
from typing import Any

import attrs
import msgspec
from quart import Blueprint
from quart_schema import document_querystring, document_request, hide

from ..engine.fake import FakeClient, FakeEngine
from ..errors import InvalidRequest, UnknownSession
from ..events.model import Activity
from ..events.types import DATA, AckStatus, Kind, TypingState
from ..ids import validate_session_id
from .models import SessionQuery
from .routes import manager
from .validation import query_session_id, read_body

# Routes that act on one session say so (document_request/querystring with its session_id): on a
# cluster node they are forwarded to the node whose engine runs it, like the API's own.
bp = Blueprint("fake", __name__, url_prefix="/_fake")


class FakeRequest(msgspec.Struct, forbid_unknown_fields=True):
    session_id: str = "default"
    phone: str = "15550001111"
    reason: str = "stream error 503"


def _engine() -> FakeEngine:
    return manager().engine  # type: ignore[return-value]  # this blueprint exists only with it


def _client(session_id: str) -> FakeClient:
    client = _engine().clients.get(validate_session_id(session_id))
    if client is None or not client.running:
        raise UnknownSession(f"fake client '{session_id}' is not running")
    return client


@bp.post("/scan")
@hide
@document_request(FakeRequest)
async def scan():
    body = await read_body(FakeRequest)
    _client(body.session_id).scan(body.phone)
    return {"success": True}


@bp.post("/rotate-qr")
@hide
@document_request(FakeRequest)
async def rotate_qr():
    body = await read_body(FakeRequest)
    return {"success": True, "code": _client(body.session_id).rotate_qr()}


@bp.post("/fail")
@hide
@document_request(FakeRequest)
async def fail():
    body = await read_body(FakeRequest)
    _client(body.session_id).fail(body.reason)
    return {"success": True}


class RefuseRequest(msgspec.Struct, forbid_unknown_fields=True):
    refuse: bool = True


@bp.post("/refuse")
@hide
async def refuse():
    """While on, every connection attempt fails at once (a WhatsApp outage)."""
    body = await read_body(RefuseRequest)
    _engine().refuse_connections = body.refuse
    return {"success": True, "refuse": body.refuse}


class AckDelayRequest(msgspec.Struct, forbid_unknown_fields=True):
    seconds: float = 0.0


@bp.post("/ack-delay")
@hide
async def ack_delay():
    """Sends wait this long for WhatsApp's acknowledgement (a stalled send when large)."""
    body = await read_body(AckDelayRequest)
    _engine().ack_delay = body.seconds
    return {"success": True, "seconds": body.seconds}


class FailLogoutsRequest(msgspec.Struct, forbid_unknown_fields=True):
    fail: bool = True


@bp.post("/fail-logouts")
@hide
async def fail_logouts():
    """While on, WhatsApp refuses every logout (so DELETE cannot unlink the device)."""
    body = await read_body(FailLogoutsRequest)
    _engine().fail_logouts = body.fail
    return {"success": True, "fail": body.fail}


class NotOnWhatsAppRequest(msgspec.Struct, forbid_unknown_fields=True):
    numbers: list[str]


@bp.post("/not-on-whatsapp")
@hide
async def not_on_whatsapp():
    """Number checks answer false for these numbers (digits with country code) from now on."""
    body = await read_body(NotOnWhatsAppRequest)
    _engine().not_on_whatsapp = set(body.numbers)
    return {"success": True, "numbers": sorted(body.numbers)}


@bp.get("/sent")
@hide
@document_querystring(SessionQuery)
async def sent():
    client = _engine().clients.get(query_session_id())
    messages = [] if client is None else [attrs.asdict(m) for m in client.sent]
    pending = 0 if client is None else client.pending_sends
    return {"success": True, "messages": messages, "pending": pending}


# -- activity: what contacts do, into the engine's activity sink ---------------------------------


class IncomingRequest(msgspec.Struct, forbid_unknown_fields=True):
    from_: str = msgspec.field(name="from")
    text: str | None = None
    session_id: str = "default"
    message_id: str | None = None
    push_name: str | None = None
    group: str | None = None  # a group id: the message is in that group
    from_me: bool = False  # written on the account's own phone
    kind: Kind = "text"
    quoted_message_id: str | None = None
    attachment: str | None = None  # base64: a media message's file, served back by GET /media
    mimetype: str | None = None


class ReceiptRequest(msgspec.Struct, forbid_unknown_fields=True):
    message_id: str
    status: AckStatus = "delivered"
    from_: str | None = msgspec.field(name="from", default=None)  # default: whom it was sent to
    session_id: str = "default"


class TypingRequest(msgspec.Struct, forbid_unknown_fields=True):
    from_: str = msgspec.field(name="from")
    state: TypingState = "composing"
    group: str | None = None
    session_id: str = "default"


class ActivityRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Any other activity type, its data as events/types.py defines it."""

    type: str
    data: dict[str, Any]
    key: str | None = None
    session_id: str = "default"


def _reported(activity: Activity) -> dict[str, Any]:
    return {"success": True, "type": activity.type, "key": activity.key, "data": activity.data}


@bp.post("/incoming")
@hide
@document_request(IncomingRequest)
async def incoming():
    """A contact's message arrives (or the account's own phone writes one, with from_me)."""
    body = await read_body(IncomingRequest)
    activity = await _client(body.session_id).incoming(
        body.from_,
        body.text,
        message_id=body.message_id,
        push_name=body.push_name,
        group=body.group,
        from_me=body.from_me,
        kind=body.kind,
        quoted_message_id=body.quoted_message_id,
        attachment=None if body.attachment is None else base64.b64decode(body.attachment),
        mimetype=body.mimetype,
    )
    return _reported(activity)


@bp.post("/receipt")
@hide
@document_request(ReceiptRequest)
async def receipt():
    """A message the session sent is delivered, read or played."""
    body = await read_body(ReceiptRequest)
    return _reported(await _client(body.session_id).receipt(body.message_id, body.status, body.from_))


@bp.post("/typing")
@hide
@document_request(TypingRequest)
async def typing():
    body = await read_body(TypingRequest)
    return _reported(await _client(body.session_id).typing(body.from_, body.state, body.group))


@bp.post("/activity")
@hide
@document_request(ActivityRequest)
async def activity():
    """Any activity type (message.reaction, presence, call.received...), its data checked."""
    body = await read_body(ActivityRequest)
    shape = DATA.get(body.type)
    if shape is None:
        raise InvalidRequest(f"type must be one of {', '.join(DATA)}")
    try:
        data = msgspec.convert(body.data, shape)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"data of {body.type}: {exc}") from None
    return _reported(await _client(body.session_id).report(body.type, data, key=body.key))
