"""Who is calling, and what they may do: the admin API key, or a key of one session.

- The admin key (`server.api_key`; anyone when none is set) may do everything.
- A session key (`POST /sessions/{id}/keys`) acts on its own session only. Every session id a
  request names (in the path, the query or the JSON body; none named means `default`) must be its
  own, else 403; routes marked `admin_only` are 403 for it whatever they name. This is checked
  before any route runs, so a new route is closed to session keys until it names their session.
- A route that names no session and shows a session key only its own things (`GET /sessions`)
  is marked `filtered_by_caller` and filters with `caller().may_act_on(session_id)`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import attrs
import msgspec
from quart import current_app, g, request

from ..errors import Forbidden, Unauthorized
from ..ids import DEFAULT_SESSION
from ..store import SessionStore

F = TypeVar("F", bound=Callable[..., Any])

_ADMIN_ONLY = "_waservice_admin_only"
_FILTERED = "_waservice_filtered_by_caller"
_OWN_FORM_CHECK = "_waservice_checks_form_session"
# Blueprints whose every route is the admin's (the fake engine's test controls act on all sessions).
ADMIN_BLUEPRINTS = frozenset({"fake"})


def admin_only(view: F) -> F:
    """Refused to session keys, whatever session the request names."""
    setattr(view, _ADMIN_ONLY, True)
    return view


def filtered_by_caller(view: F) -> F:
    """The route names no session and filters what it shows with `caller().may_act_on`."""
    setattr(view, _FILTERED, True)
    return view


def checks_form_session(view: F) -> F:
    """The route takes multipart/form-data too, whose session_id is a part of the (large, streamed)
    body: for such a body it calls `require_access` itself once it has read the form."""
    setattr(view, _OWN_FORM_CHECK, True)
    return view


def is_filtered_by_caller(view: Callable[..., Any]) -> bool:
    return getattr(view, _FILTERED, False)


def reads_session_from_form(view: Callable[..., Any]) -> bool:
    """Marked `checks_form_session`: a multipart body names its session in a part."""
    return getattr(view, _OWN_FORM_CHECK, False)


def require_access(session_id: str) -> None:
    who = caller()
    if not who.may_act_on(session_id):
        raise Forbidden(f"this key acts on session '{who.session_id}' only, not on '{session_id}'")


@attrs.frozen
class Caller:
    session_id: str | None = None  # None: the admin
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.session_id is None

    def may_act_on(self, session_id: str) -> bool:
        return self.session_id is None or session_id == self.session_id


ADMIN = Caller()


def caller() -> Caller:
    """The caller of the current request (checked by `Authenticator`)."""
    return g.get("waservice_caller", ADMIN)


def _given_key() -> str:
    given = request.headers.get("X-API-Key", "")
    if not given:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else ""
    return given


class Authenticator:
    """Before every request: who is calling (401 for a wrong key) and whether they may (403)."""

    def __init__(
        self, api_key: str, store: SessionStore, public_paths: Iterable[str], public_prefixes: tuple[str, ...]
    ) -> None:
        self._admin = api_key.encode()
        self._store = store
        self._public = frozenset(public_paths)
        self._public_prefixes = public_prefixes

    def is_public(self, path: str) -> bool:
        return path in self._public or path.startswith(self._public_prefixes)

    async def check(self) -> None:
        if not self._admin or self.is_public(request.path):
            return  # without an admin key everyone is the admin (loopback only: config.py)
        given = _given_key()
        if hmac.compare_digest(given.encode(), self._admin):
            return
        stored = self._store.check_key(given) if given else None
        if stored is None:
            raise Unauthorized("missing or invalid API key (send X-API-Key or Authorization: Bearer)")
        who = Caller(stored.session_id, stored.key_id)
        g.waservice_caller = who
        await _authorize(who)


async def _authorize(who: Caller) -> None:
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if view is None:
        return  # no such route: the 404 or 405 follows
    if getattr(view, _ADMIN_ONLY, False) or request.blueprint in ADMIN_BLUEPRINTS:
        raise Forbidden("this route needs the admin API key; a session key cannot use it")
    if getattr(view, _FILTERED, False):
        return
    if getattr(view, _OWN_FORM_CHECK, False) and request.mimetype == "multipart/form-data":
        return  # the route checks the form's session_id (a body part) after reading it
    for session_id in await named_sessions():
        if not who.may_act_on(session_id):
            raise Forbidden(f"this key acts on session '{who.session_id}' only, not on '{session_id}'")


async def named_sessions() -> set[str]:
    """Every session id the request names: path, query and JSON body; `default` if none."""
    named: set[str] = set()
    if request.view_args and isinstance(request.view_args.get("session_id"), str):
        named.add(request.view_args["session_id"])
    named.update(request.args.getlist("session_id"))
    named.update(_body_session_ids(await request.get_data(cache=True)))
    return named or {DEFAULT_SESSION}


def _body_session_ids(raw: bytes | str) -> set[str]:
    if not raw or not raw.strip():
        return set()
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return set()  # the route rejects it as JSON
    if not isinstance(body, dict) or "session_id" not in body:
        return set()
    value = body["session_id"]
    # null means `default`; any other non-string is refused by the route's own validation.
    return {DEFAULT_SESSION if value is None else value} if isinstance(value, str | None) else set()
