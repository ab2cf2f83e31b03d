"""The seed's HTTP routes: validate, make one call into the session manager, shape the JSON."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import TypeVar

import attrs
import msgspec
import trio
from quart import Blueprint, Response, current_app, request
from quart_schema import document_querystring, document_request, document_response, security_scheme, tag

from ..engine import SentMessage
from ..engine.content import Text
from ..errors import InvalidRequest, NoQrCode
from ..messaging import Messaging
from ..sessions.manager import SessionManager
from ..sessions.supervisor import SessionInfo, SessionSupervisor
from .caller import Caller, admin_only, caller, filtered_by_caller
from .idempotency import idempotent
from .limits import limit_new_session
from .models import (
    ActionResponse,
    DeleteResponse,
    ErrorResponse,
    HealthResponse,
    QrResponse,
    SendRequest,
    SendResponse,
    SendResult,
    SessionQuery,
    SessionRequest,
    SessionsQuery,
    SessionsResponse,
    SessionView,
    StatusResponse,
)
from .qr import qr_images
from .scope import creates_session
from .validation import message_text, query_session_id, read_body, recipient

bp = Blueprint("api", __name__)
A = TypeVar("A")
B = TypeVar("B")


def manager() -> SessionManager:
    return current_app.extensions["waservice.manager"]


def messaging() -> Messaging:
    return current_app.extensions["waservice.messaging"]


def sent_response(session_id: str, sent: SentMessage, what: str) -> SendResponse:
    """Every send route's answer: `what` names what was sent ("Message", "Location"...)."""
    return SendResponse(
        session_id=session_id,
        message=f"{what} sent successfully",
        result=SendResult(id=sent.id, timestamp=sent.timestamp, to=sent.to),
    )


def errors(*codes: int):
    """Document the error shape for the given status codes."""

    def decorate(func):
        for code in codes:
            func = document_response(ErrorResponse, code)(func)
        return func

    return decorate


def iso_seconds(timestamp: float) -> str:
    """The API's timestamps outside events: ISO-8601 UTC to the second."""
    return _iso_second(math.floor(timestamp))  # floor, as datetime did: before 1970 too


# GET /sessions formats every session's `state_changed_at`: cached, the list costs ~1 us less per
# session, and far more on a loaded loop. Sessions that changed state in the same second share one.
@functools.lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def _view(info: SessionInfo) -> SessionView:
    return SessionView(
        session_id=info.session_id,
        state=info.state,
        phone_number=info.phone_number,
        has_qr=info.has_qr,
        reconnect_attempts=info.reconnect_attempts,
        last_error=info.last_error,
        state_changed_at=iso_seconds(info.state_changed_at),
        queue_depth=info.queue_depth,
    )


@bp.get("/health")
@tag(["Health"])
@security_scheme([])
@document_response(HealthResponse)
@errors(403)
async def health() -> HealthResponse:
    """Server health check (never needs the API key)."""
    return HealthResponse()


# Building the list takes ~4 us per session on the event loop: build it in slices with a
# checkpoint between them, so 12,000 sessions never hold the loop more than a few ms at a time.
SESSIONS_PER_SLICE = 500
# Above this many sessions the JSON (about 170 bytes each) is encoded in a worker thread.
ENCODE_IN_THREAD_FROM = 2_000


@bp.get("/sessions")
@tag(["Sessions"])
@document_querystring(SessionsQuery)
@document_response(SessionsResponse)
@errors(400, 401, 403)
@filtered_by_caller
async def list_sessions() -> Response:
    """Sessions with their state, phone number, QR availability and last error (all, or a page).

    With a session key: only that session."""
    query = _sessions_query()
    who = caller()
    listed = [
        entry
        for entry in await _listed_sessions(who)
        if who.may_act_on(entry.session_id) and (query.state is None or entry.state == query.state)
    ]
    page = await _in_slices(listed[query.offset :][: query.limit], _as_view)  # only the page is shaped
    body = SessionsResponse(sessions=page, total=len(listed))
    if len(page) >= ENCODE_IN_THREAD_FROM:
        encoded = await trio.to_thread.run_sync(msgspec.json.encode, body)
    else:
        encoded = msgspec.json.encode(body)
    return Response(encoded, mimetype="application/json")


async def _listed_sessions(who: Caller) -> list[SessionInfo] | list[SessionView]:
    """Every session: this node's as they are now; with several nodes, the others' as their owners
    last wrote them to the registry (`state_changed_at` is when)."""
    local = [s for s in manager().sessions() if who.may_act_on(s.session_id)]
    clustered = current_app.extensions.get("waservice.cluster")
    if clustered is None:
        return await _in_slices(local, lambda s: s.info())
    from .nodes import registry_views  # psycopg is loaded only for a cluster

    node_id = clustered.node.node_id
    here = {v.session_id: attrs.evolve(v, node=node_id) for v in await _in_slices(local, _local_view)}
    return [here.get(v.session_id, v) for v in await registry_views(clustered)]


def _local_view(session: SessionSupervisor) -> SessionView:
    return _view(session.info())


def _as_view(entry: SessionInfo | SessionView) -> SessionView:
    return entry if isinstance(entry, SessionView) else _view(entry)


async def _in_slices(items: list[A], convert: Callable[[A], B]) -> list[B]:
    result: list[B] = []
    for start in range(0, len(items), SESSIONS_PER_SLICE):
        if start:
            await trio.lowlevel.checkpoint()  # let other requests run
        result.extend(convert(item) for item in items[start : start + SESSIONS_PER_SLICE])
    return result


def _sessions_query() -> SessionsQuery:
    try:
        query = msgspec.convert(request.args.to_dict(), SessionsQuery, strict=False)
    except msgspec.ValidationError as exc:
        problem = str(exc).replace("`$.", "`").replace(" - at ", " for ")
        raise InvalidRequest(f"invalid query: {problem}") from None
    if query.offset < 0 or (query.limit is not None and query.limit < 1):
        raise InvalidRequest("invalid query: offset must be >= 0 and limit >= 1")
    return query


@bp.delete("/sessions/<session_id>")
@tag(["Sessions"])
@admin_only  # it deletes the session's keys too
@document_response(DeleteResponse)
@errors(400, 401, 403, 503)
async def delete_session(session_id: str) -> DeleteResponse:
    """Delete a session, unlink its device and remove its credentials (not 'default').

    A paired session that is not connected is connected briefly to unlink it; `unlinked: false` with
    a `warning` says when that was not possible (then remove it on the phone)."""
    result = await manager().delete(session_id)
    await current_app.extensions["waservice.messaging"].forget_session(session_id)
    return DeleteResponse(
        message="Session deleted successfully", unlinked=result.unlinked, warning=result.warning
    )


@bp.post("/connect")
@tag(["Connection"])
@creates_session
@document_request(SessionRequest)
@document_response(ActionResponse)
@errors(400, 401, 403, 415, 429, 503)
async def connect() -> ActionResponse:
    """Create the session if needed and connect it (idempotent)."""
    body = await read_body(SessionRequest)
    limit_new_session(manager(), body.session_id)
    session = await manager().connect(body.session_id)
    if session.info().state == "connected":
        message = "Session already connected."
    else:
        message = "Connection initiated. Scan the QR code to authenticate."
    return ActionResponse(session_id=body.session_id, message=message)


@bp.get("/qr")
@tag(["Connection"])
@document_querystring(SessionQuery)
@document_response(QrResponse)
@errors(400, 401, 403, 404)
async def qr() -> QrResponse:
    """The current QR code as a PNG data URL, plus the raw string the phone scans."""
    session_id = query_session_id()
    code = manager().get(session_id).info().qr_code
    if code is None:
        raise NoQrCode(f"no QR code available for session '{session_id}'; POST /connect first, then poll /qr")
    url = await qr_images(current_app).data_url(session_id, code)
    return QrResponse(session_id=session_id, qr=url, code=code)


@bp.get("/status")
@tag(["Connection"])
@document_querystring(SessionQuery)
@document_response(StatusResponse)
@errors(400, 401, 403)
async def status() -> StatusResponse:
    """Connection state of one session, and why it is not connected."""
    view = _view(manager().get(query_session_id()).info())
    clustered = current_app.extensions.get("waservice.cluster")
    node = None if clustered is None else clustered.node.node_id
    return StatusResponse(**{**attrs.asdict(view), "node": node})


@bp.post("/disconnect")
@tag(["Connection"])
@document_request(SessionRequest)
@document_response(ActionResponse)
@errors(400, 401, 403, 415)
async def disconnect() -> ActionResponse:
    """Disconnect a session (keeps its credentials; it stays down across restarts until /connect)."""
    body = await read_body(SessionRequest)
    await manager().disconnect(body.session_id)
    return ActionResponse(session_id=body.session_id, message="WhatsApp disconnected successfully")


@bp.post("/reset-reconnect")
@tag(["Connection"])
@document_request(SessionRequest)
@document_response(ActionResponse)
@errors(400, 401, 403, 415)
async def reset_reconnect() -> ActionResponse:
    """Reset the reconnect counter; a `failed` session starts connecting again."""
    body = await read_body(SessionRequest)
    manager().reset_reconnect(body.session_id)
    return ActionResponse(
        session_id=body.session_id, message="Reconnection attempts counter reset successfully"
    )


@bp.post("/send")
@tag(["Messaging"])
@idempotent
@document_request(SendRequest)
@document_response(SendResponse)
@errors(400, 401, 403, 404, 415, 429, 502)
async def send() -> SendResponse:
    """Send a text message, optionally as a reply (`reply_to`); 2xx only once WhatsApp acknowledged it.

    With `check_number` (default: the messages.check_number setting), a number that is not on
    WhatsApp is a 400 and nothing is sent. Messages of a session go out in order through its send
    queue (paced if `[sending]` says so); a full queue answers 429 with Retry-After."""
    body = await read_body(SendRequest)
    to, text = recipient(body.number, body.chat), message_text(body.message)
    if messaging().check_number if body.check_number is None else body.check_number:
        await messaging().require_on_whatsapp(body.session_id, to)
    content = Text(text=text, reply_to=await messaging().quote(body.session_id, body.reply_to))
    sent = await messaging().send(body.session_id, to, content, kind="text", text=text)
    return sent_response(body.session_id, sent, "Message")
