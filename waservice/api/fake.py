"""Test-only routes that script the fake engine; registered only when `engine = "fake"`."""

from __future__ import annotations

import attrs
import msgspec
from quart import Blueprint
from quart_schema import hide

from ..engine.fake import FakeClient, FakeEngine
from ..errors import UnknownSession
from ..ids import validate_session_id
from .routes import manager
from .validation import query_session_id, read_body

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
async def scan():
    body = await read_body(FakeRequest)
    _client(body.session_id).scan(body.phone)
    return {"success": True}


@bp.post("/rotate-qr")
@hide
async def rotate_qr():
    body = await read_body(FakeRequest)
    return {"success": True, "code": _client(body.session_id).rotate_qr()}


@bp.post("/fail")
@hide
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


@bp.get("/sent")
@hide
async def sent():
    client = _engine().clients.get(query_session_id())
    messages = [] if client is None else [attrs.asdict(m) for m in client.sent]
    pending = 0 if client is None else client.pending_sends
    return {"success": True, "messages": messages, "pending": pending}
