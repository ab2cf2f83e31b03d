"""Per-session API keys: the admin creates, lists and revokes keys that act on one session only.

A key is shown once, in the answer that creates it; only its hash is stored (store/keys.py).
Who may use a key for what is api/caller.py's business.
"""

from __future__ import annotations

import attrs
from quart import Blueprint
from quart_schema import document_response, tag

from ..errors import InvalidRequest, UnknownSession
from .caller import admin_only
from .routes import errors, iso_seconds, manager

bp = Blueprint("keys", __name__)


class UnknownKey(InvalidRequest):
    """No key by that id for that session."""


@attrs.define
class KeyView:
    key_id: str
    created_at: str  # ISO 8601, UTC


@attrs.define
class KeyCreatedResponse:
    session_id: str
    key_id: str
    key: str  # shown only here: store it now
    created_at: str
    success: bool = True


@attrs.define
class KeysResponse:
    session_id: str
    keys: list[KeyView]
    success: bool = True


@attrs.define
class KeyDeletedResponse:
    session_id: str
    key_id: str
    message: str = "Key revoked"
    success: bool = True


@bp.post("/sessions/<session_id>/keys")
@tag(["Keys"])
@admin_only
@document_response(KeyCreatedResponse)
@errors(400, 401, 403, 503)
async def create_key(session_id: str) -> KeyCreatedResponse:
    """Create a key that acts on this session only (admin key only). The key is shown once."""
    manager().get(session_id)  # 400 for an unknown session
    new = await manager().store.create_key(session_id)
    if new is None:
        raise UnknownSession(f"session '{session_id}' not found; POST /connect creates it")
    return KeyCreatedResponse(
        session_id=session_id,
        key_id=new.stored.key_id,
        key=new.key,
        created_at=iso_seconds(new.stored.created_at),
    )


@bp.get("/sessions/<session_id>/keys")
@tag(["Keys"])
@admin_only
@document_response(KeysResponse)
@errors(400, 401, 403)
async def list_keys(session_id: str) -> KeysResponse:
    """The session's keys: their ids and creation times, never the keys (admin key only)."""
    manager().get(session_id)
    keys = [KeyView(k.key_id, iso_seconds(k.created_at)) for k in manager().store.keys(session_id)]
    return KeysResponse(session_id=session_id, keys=keys)


@bp.delete("/sessions/<session_id>/keys/<key_id>")
@tag(["Keys"])
@admin_only
@document_response(KeyDeletedResponse)
@errors(400, 401, 403, 503)
async def delete_key(session_id: str, key_id: str) -> KeyDeletedResponse:
    """Revoke a key at once (admin key only)."""
    manager().get(session_id)
    if not await manager().store.delete_key(session_id, key_id):
        raise UnknownKey(f"session '{session_id}' has no key '{key_id}'")
    return KeyDeletedResponse(session_id=session_id, key_id=key_id)
