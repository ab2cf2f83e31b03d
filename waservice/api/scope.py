"""Which session a route acts on, read from its definition: for code that looks at routes from
outside them, such as a cluster node that forwards a request to the node owning its session.

A route acts on one session when its URL has `<session_id>`, or its documented query string or
JSON body has a `session_id` field. The webhooks' `session_id` only filters what a webhook gets:
webhooks belong to no session, so they are answered where they are asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from quart import Quart
from quart_schema.validation import QUART_SCHEMA_QUERYSTRING_ATTRIBUTE, QUART_SCHEMA_REQUEST_ATTRIBUTE

from .caller import is_filtered_by_caller, reads_session_from_form

F = TypeVar("F", bound=Callable[..., Any])

SESSION_FIELD = "session_id"
_CREATES = "_waservice_creates_session"
# Blueprints whose `session_id` is a filter, not the session the route acts on.
NOT_SESSION_BLUEPRINTS = frozenset({"webhooks"})


def creates_session(view: F) -> F:
    """The route creates the session it names when there is none (POST /connect, /pair-code)."""
    setattr(view, _CREATES, True)
    return view


@attrs.frozen
class RouteScope:
    """How a session-scoped route names its session."""

    creates: bool = False  # an unknown session is created (so placed on some node)
    # Only a session_id in the query counts: without one the route is about every session the
    # caller may see (GET /events), not about `default`.
    only_if_named: bool = False
    in_form: bool = False  # a multipart/form-data body names it in a part (POST /send-media)


def session_routes(app: Quart) -> dict[str, RouteScope]:
    """Every endpoint of `app` that acts on one session, by endpoint name (call once all
    blueprints are registered)."""
    scopes: dict[str, RouteScope] = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        if view is None or rule.endpoint.partition(".")[0] in NOT_SESSION_BLUEPRINTS:
            continue
        if SESSION_FIELD in rule.arguments or _names_session(view):
            scopes[rule.endpoint] = RouteScope(
                creates=getattr(view, _CREATES, False),
                only_if_named=is_filtered_by_caller(view),
                in_form=reads_session_from_form(view),
            )
    return scopes


def _names_session(view: Callable[..., Any]) -> bool:
    body = getattr(view, QUART_SCHEMA_REQUEST_ATTRIBUTE, None)  # (model, source) once documented
    query = getattr(view, QUART_SCHEMA_QUERYSTRING_ATTRIBUTE, None)
    return any(model is not None and SESSION_FIELD in _fields(model) for model in (body and body[0], query))


def _fields(model: type) -> tuple[str, ...]:
    if attrs.has(model):
        return tuple(field.name for field in attrs.fields(model))
    return tuple(getattr(model, "__struct_fields__", ()))  # a msgspec Struct
