"""GET /media/{session_id}/{message_id}: a received message's media, downloaded, decrypted and
streamed with its content type (from the shared cache when it was fetched before)."""

from __future__ import annotations

import re

from quart import Blueprint, Response
from quart_schema import tag

from ..errors import InvalidRequest
from ..ids import validate_session_id
from .messaging import messaging
from .routes import errors

bp = Blueprint("media", __name__)
_MESSAGE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# Rendered inline; anything else is offered as a download, so a received HTML or SVG file never
# runs as a page of this origin.
_INLINE = re.compile(r"(?:image/(?:jpeg|png|gif|webp)|(?:audio|video)/[a-z0-9.+-]+)(?:;.*)?", re.IGNORECASE)


@bp.get("/media/<session_id>/<message_id>")
@tag(["Media"])
@errors(400, 401, 403, 404, 502, 503)
async def media(session_id: str, message_id: str) -> Response:
    """The media (image, video, audio, document, sticker) of a message the session received, with
    its content type and length. Downloaded from WhatsApp once, then served from a cache."""
    validate_session_id(session_id)
    if not _MESSAGE_ID.fullmatch(message_id):
        raise InvalidRequest("invalid message id: 1-128 letters, digits, '_', '.', ':' or '-'")
    cached, mimetype = await messaging().download(session_id, message_id)
    response = Response(cached.chunks(), mimetype=mimetype)
    response.headers["Content-Length"] = str(cached.size)
    response.headers["Cache-Control"] = "private, max-age=3600"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    if not _INLINE.fullmatch(mimetype):
        response.headers["Content-Disposition"] = f'attachment; filename="{message_id}"'
    return response


def document_media(paths: dict) -> None:
    """What quart-schema documents as JSON only: GET /media's answer is the file itself, and
    /send-media also takes a multipart/form-data upload (the JSON fields as parts, plus `file`)."""
    send = paths.get("/send-media", {}).get("post")
    content = send and send.get("requestBody", {}).get("content", {})
    if content and "application/json" in content:
        schema = content["application/json"]["schema"]
        fields = {k: _part(v) for k, v in schema.get("properties", {}).items() if k not in ("url", "data")}
        content["multipart/form-data"] = {
            "schema": {
                "type": "object",
                "properties": {
                    **fields,
                    "file": {"type": "string", "format": "binary", "description": "The file."},
                },
                "required": [*(r for r in schema.get("required", []) if r in fields), "file"],
            }
        }
    operation = paths.get("/media/{session_id}/{message_id}", {}).get("get")
    if operation is not None:
        operation.setdefault("responses", {})[200] = {  # int keys until serialised
            "description": "The file, with its content type and Content-Length.",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }


def _part(field: dict) -> dict:
    """A form part is text or absent, never null: the field's non-null form."""
    options = [o for o in field.get("anyOf", []) if o.get("type") != "null"]
    if len(options) != 1:
        return field
    return {**options[0], **{k: v for k, v in field.items() if k not in ("anyOf", "default")}}
