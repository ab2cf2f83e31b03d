"""The messaging routes of issue 9: pairing code, number check, media, location, contact, reply,
reaction, edit, delete, read and typing. Validate, one call into `Messaging`, shape the JSON."""

from __future__ import annotations

import re

import trio
from quart import Blueprint, current_app, request
from quart_schema import document_request, document_response, tag
from werkzeug.exceptions import RequestTimeout

from ..engine.content import ContactCard, Location, Media
from ..errors import InvalidRequest, SessionNotConnected
from ..media.fetch import FetchPolicy, fetch_into
from ..media.intake import boundary_of, read_multipart, write_base64
from ..media.kinds import decide_mimetype
from ..media.spool import SpoolFile
from .caller import checks_form_session, require_access
from .idempotency import idempotent
from .limits import limit_new_session
from .models import (
    ActionResponse,
    CheckNumbersRequest,
    CheckNumbersResponse,
    DeleteMessageRequest,
    EditRequest,
    NumberCheckView,
    PairCodeRequest,
    PairCodeResponse,
    ReactRequest,
    ReadRequest,
    SendContactRequest,
    SendLocationRequest,
    SendMediaRequest,
    SendResponse,
    TypingRequest,
)
from .routes import errors, messaging, sent_response
from .scope import creates_session
from .validation import convert_fields, message_text, phone_number, read_body, recipient
from .vcard import contact_vcard

bp = Blueprint("messaging", __name__)
MEDIA_PATH = "/send-media"
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


# Routes whose recipient is exactly one of `number` and `chat`.
RECIPIENT_PATHS = ("/send", MEDIA_PATH, "/send-location", "/send-contact")


def document_recipients(paths: dict) -> None:
    """The rule msgspec cannot state: exactly one of `number` and `chat` (JSON Schema oneOf)."""
    for path in RECIPIENT_PATHS:
        content = paths.get(path, {}).get("post", {}).get("requestBody", {}).get("content", {})
        for media_type in content.values():
            media_type["schema"]["oneOf"] = [{"required": ["number"]}, {"required": ["chat"]}]


def fetch_policy() -> FetchPolicy:
    return current_app.extensions["waservice.fetch_policy"]


def max_media_bytes() -> int:
    return current_app.extensions["waservice.max_media_bytes"]


# -- linking and contacts -------------------------------------------------------------------------


@bp.post("/pair-code")
@tag(["Connection"])
@creates_session
@document_request(PairCodeRequest)
@document_response(PairCodeResponse)
@errors(400, 401, 403, 415, 429, 502, 503)
async def pair_code() -> PairCodeResponse:
    """Link with a code instead of a QR: the phone types it under Linked devices > Link with phone
    number. Creates and connects the session like /connect if needed. The QR stays valid; when
    the pairing window ends, `last_error` says the code expired."""
    body = await read_body(PairCodeRequest)
    phone = phone_number(body.number)
    limit_new_session(messaging().manager, body.session_id)
    code = await messaging().pair_code(body.session_id, phone)
    return PairCodeResponse(session_id=body.session_id, code=code)


@bp.post("/check-numbers")
@tag(["Contacts"])
@document_request(CheckNumbersRequest)
@document_response(CheckNumbersResponse)
@errors(400, 401, 403, 415, 502)
async def check_numbers() -> CheckNumbersResponse:
    """Which of 1-50 phone numbers are on WhatsApp (`jid`: the account's JID when one is)."""
    body = await read_body(CheckNumbersRequest)
    numbers = list(dict.fromkeys(phone_number(n) for n in body.numbers))
    checks = await messaging().check_numbers(body.session_id, numbers)
    results = [NumberCheckView(number=c.number, on_whatsapp=c.on_whatsapp, jid=c.jid) for c in checks]
    return CheckNumbersResponse(session_id=body.session_id, results=results)


# -- sending --------------------------------------------------------------------------------------


@bp.post(MEDIA_PATH)
@tag(["Messaging"])
@idempotent
@checks_form_session
@document_request(SendMediaRequest)
@document_response(SendResponse)
@errors(400, 401, 403, 404, 408, 413, 415, 502, 503)
async def send_media() -> SendResponse:
    """Send an image, video, audio, voice note, document or sticker.

    The file comes as JSON `url` (fetched from a public address) or base64 `data`, or as a
    multipart/form-data upload with the same fields as parts and the file in a part named `file`
    (`session_id` may come in the query instead: a proxy routes it without reading the body).
    At most media.max_bytes (64 MiB); larger is 413, found while it streams in."""
    spool = await messaging().spool.create(max_media_bytes())
    try:
        form, served_as, found_name = await _read_media(spool)
        to = recipient(form.number, form.chat)
        content = Media(
            kind=form.type,
            path=str(spool.path),
            mimetype=decide_mimetype(
                form.type, form.mimetype, spool.head, form.file_name or found_name, served_as
            ),
            size=spool.size,
            caption=form.caption or None,
            file_name=_file_name(form, found_name),
            reply_to=await messaging().quote(form.session_id, form.reply_to),
        )
        if spool.size == 0:
            raise InvalidRequest("the media file is empty")
        sent = await messaging().send(form.session_id, to, content, kind=form.type, text=content.caption)
    finally:
        await spool.delete()  # sent or not, the bytes are not kept
    return sent_response(form.session_id, sent, "Media")


async def _read_media(spool: SpoolFile) -> tuple[SendMediaRequest, str | None, str | None]:
    """The form, and what the upload or the URL said of the file (its content type and name)."""
    if request.mimetype != "multipart/form-data":
        form = await read_body(SendMediaRequest)
        _require_connected(form.session_id)  # before a fetch that may take a while
        if (form.url is None) == (form.data is None):
            raise InvalidRequest(
                "give the file as exactly one of `url` and `data` (or upload it as multipart)"
            )
        if form.data is not None:
            served_as = await write_base64(form.data, spool)
            return form, served_as, None
        assert form.url is not None
        fetched = await fetch_into(form.url, spool, fetch_policy())
        return form, fetched.content_type, fetched.file_name
    query_session = _query_session()
    boundary = boundary_of(request.content_type or "")
    # The same bound as a JSON body's (server.body_timeout): an upload that trickles in forever
    # would hold its connection and spool file.
    timeout = current_app.config["BODY_TIMEOUT"]
    upload = None
    with trio.move_on_after(timeout):
        upload = await read_multipart(request.body, boundary, spool)
    if upload is None:
        raise RequestTimeout(f"the upload did not arrive within {timeout:g} s (server.body_timeout)")
    fields = upload.fields
    if query_session is not None and fields.setdefault("session_id", query_session) != query_session:
        raise InvalidRequest("session_id differs between the query and the form")
    form = convert_fields(fields, SendMediaRequest)
    require_access(form.session_id)
    if form.url is not None or form.data is not None:
        raise InvalidRequest("with an uploaded file, give neither `url` nor `data`")
    if not upload.has_file:
        raise InvalidRequest("a multipart/form-data request needs the file in a part named 'file'")
    return form, upload.content_type, upload.file_name


def _query_session() -> str | None:
    """An upload may name its session in the query instead of a part: a node of a cluster then
    routes it to the session's owner without reading the body."""
    extra = next((name for name in request.args if name != "session_id"), None)
    if extra is not None:
        raise InvalidRequest(f"unexpected query parameter '{extra}': send it as a form part")
    given = request.args.getlist("session_id")
    if len(given) > 1:
        raise InvalidRequest("session_id is given more than once in the query")
    return given[0] if given else None


def _require_connected(session_id: str) -> None:
    info = messaging().manager.get(session_id).info()
    if info.state != "connected":
        raise SessionNotConnected(f"session '{session_id}' is not connected (state: {info.state})")


def _file_name(form: SendMediaRequest, found: str | None) -> str | None:
    """The name a document shows: the given one, else the upload's or the URL's; never a path."""
    if form.type != "document":
        return form.file_name
    name = form.file_name or found or "file"
    name = _UNSAFE_NAME.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip() or "file"
    return name[:255]


@bp.post("/send-location")
@tag(["Messaging"])
@idempotent
@document_request(SendLocationRequest)
@document_response(SendResponse)
@errors(400, 401, 403, 404, 415, 502)
async def send_location() -> SendResponse:
    """Send a location pin, with an optional name and address."""
    body = await read_body(SendLocationRequest)
    to = recipient(body.number, body.chat)
    content = Location(
        lat=body.lat,
        lng=body.lng,
        name=body.name or None,
        address=body.address or None,
        reply_to=await messaging().quote(body.session_id, body.reply_to),
    )
    sent = await messaging().send(body.session_id, to, content, kind="location", text=body.name)
    return sent_response(body.session_id, sent, "Location")


@bp.post("/send-contact")
@tag(["Messaging"])
@idempotent
@document_request(SendContactRequest)
@document_response(SendResponse)
@errors(400, 401, 403, 404, 415, 502)
async def send_contact() -> SendResponse:
    """Send a contact card (the service builds its vCard)."""
    body = await read_body(SendContactRequest)
    to = recipient(body.number, body.chat)
    name = message_text(body.name).strip()
    card = ContactCard(
        name=name,
        vcard=contact_vcard(name, phone_number(body.phone)),
        reply_to=await messaging().quote(body.session_id, body.reply_to),
    )
    sent = await messaging().send(body.session_id, to, card, kind="contact", text=name)
    return sent_response(body.session_id, sent, "Contact")


@bp.post("/react")
@tag(["Messaging"])
@idempotent
@document_request(ReactRequest)
@document_response(SendResponse)
@errors(400, 401, 403, 404, 415, 502)
async def react() -> SendResponse:
    """React to a message with an emoji; an empty emoji removes this account's reaction."""
    body = await read_body(ReactRequest)
    emoji = body.emoji.strip()
    if emoji and not any(ord(ch) > 0x7F for ch in emoji):
        raise InvalidRequest(f"emoji must be an emoji (or empty to remove the reaction), not {emoji!r}")
    sent = await messaging().react(body.session_id, recipient(None, body.chat), body.message_id, emoji)
    return sent_response(body.session_id, sent, "Reaction" if emoji else "Reaction removal")


@bp.post("/edit")
@tag(["Messaging"])
@idempotent
@document_request(EditRequest)
@document_response(SendResponse)
@errors(400, 401, 403, 404, 415, 502)
async def edit() -> SendResponse:
    """Replace the text of one of this account's own messages."""
    body = await read_body(EditRequest)
    text = message_text(body.message)
    sent = await messaging().edit(body.session_id, recipient(None, body.chat), body.message_id, text)
    return sent_response(body.session_id, sent, "Edit")


@bp.post("/delete-message")
@tag(["Messaging"])
@idempotent
@document_request(DeleteMessageRequest)
@document_response(SendResponse)
@errors(400, 401, 403, 404, 415, 502)
async def delete_message() -> SendResponse:
    """Delete a message for everyone (this account's own, or anyone's in a group it administers)."""
    body = await read_body(DeleteMessageRequest)
    sent = await messaging().revoke(body.session_id, recipient(None, body.chat), body.message_id)
    return sent_response(body.session_id, sent, "Deletion")


# -- chats ----------------------------------------------------------------------------------------


@bp.post("/read")
@tag(["Chats"])
@document_request(ReadRequest)
@document_response(ActionResponse)
@errors(400, 401, 403, 404, 415, 502)
async def read() -> ActionResponse:
    """Mark received messages read (blue ticks for their authors)."""
    body = await read_body(ReadRequest)
    count = await messaging().mark_read(body.session_id, recipient(None, body.chat), body.message_ids)
    return ActionResponse(session_id=body.session_id, message=f"{count} message(s) marked read")


@bp.post("/typing")
@tag(["Chats"])
@document_request(TypingRequest)
@document_response(ActionResponse)
@errors(400, 401, 403, 415, 502)
async def typing() -> ActionResponse:
    """Show typing (composing) or recording in a chat, or stop (paused)."""
    body = await read_body(TypingRequest)
    await messaging().set_typing(body.session_id, recipient(None, body.chat), body.state)
    return ActionResponse(session_id=body.session_id, message=f"typing state set to {body.state}")
