"""Any node answers any route: a request for a session another node owns is forwarded to it.

`Forwarding.install(app)` adds a before_request hook that runs after the Host/Origin guards, the
API-key check and the wait for restored sessions (so nobody reaches another node through this one
without a valid key), and before any route or idempotency logic. For a route that acts on one
session (api/scope.py) it asks the `Locator` who owns that session; when another node does, the
request goes there (relay.py) and its answer comes back unchanged, streamed.

- A request another node already forwarded is never forwarded again: when this node is not the
  owner (any more), the session is moving, and the caller is told to retry (503, Retry-After: 1).
- Every answer says which node gave it (`X-Waservice-Node`): the owner's own header passes through.
- `waservice_forwarded_requests_total{outcome}` counts forwarded requests and how they ended.
- A multipart upload names its session in a part: it is taken from the query when given, else the
  leading parts are read (form_session.py) and sent on ahead of the rest of the stream.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any, Protocol

import attrs
import trio
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from quart import Quart, Response, current_app, g, request
from werkzeug.exceptions import RequestTimeout

from ..api.caller import named_sessions, require_access
from ..api.scope import RouteScope, session_routes
from ..errors import (
    ClusterUnavailable,
    InvalidRequest,
    InvalidSessionId,
    OwnerFailed,
    OwnerTimedOut,
    OwnerUnreachable,
    SessionMoving,
)
from ..ids import DEFAULT_SESSION, validate_session_id
from ..media.intake import boundary_of
from .database import DatabaseUnavailable
from .form_session import FORM_OVERHEAD, PrefixedBody, ReadAhead, find_form_session
from .relay import FORWARDED_BY, Relay

NODE_HEADER = "X-Waservice-Node"
_READ_AHEAD = "waservice_forward_read_ahead"  # g: the read-ahead to delete when the request ends


@attrs.frozen
class Owner:
    node_id: str
    url: str  # its API, as it advertises it (cluster.advertise_url)


class Locator(Protocol):
    async def owner(self, session_id: str, *, create: bool) -> Owner | None:
        """The node that must answer for `session_id`, or None when this node answers.

        `create`: the request may create the session (POST /connect, /pair-code); an unknown
        session is then placed on the least-loaded live node. Raises DatabaseUnavailable (a 503
        here) or a ServiceError such as ClusterUnavailable (answered as it says)."""
        ...


class Forwarding:
    """This node's side of "any node answers any route"."""

    def __init__(
        self,
        locator: Locator,
        node_id: str,
        *,
        timeout: float,
        connect_timeout: float = 5.0,
        idle_expiry: float = 4.0,
        max_connections: int = 1000,
    ) -> None:
        """`timeout`: how long an owner may take to answer (cluster.forward_timeout; a send waits
        for WhatsApp's ack). `connect_timeout`: to reach it (then 503)."""
        self.locator = locator
        self.node_id = node_id
        self.relay = Relay(
            node_id,
            timeout=timeout,
            connect_timeout=min(connect_timeout, timeout),
            idle_expiry=idle_expiry,
            max_connections=max_connections,
        )
        self._routes: dict[str, RouteScope] = {}
        self.outcomes: collections.Counter[str] = collections.Counter()

    def install(self, app: Quart) -> None:
        """Call once every route is registered and after the guard, key and restore hooks."""
        self._routes = session_routes(app)
        app.extensions["waservice.manager"].metrics.add("forwarding", _OutcomeCollector(self.outcomes))
        app.before_request(self.forward_if_elsewhere)
        app.after_request(self._name_node)
        app.teardown_request(_delete_read_ahead)
        app.after_serving(self.relay.aclose)

    def close(self) -> None:
        """The node is stopping: relayed answers (event streams) end now, as local ones do."""
        self.relay.close_streams()

    async def close_when(self, stopping: trio.Event) -> None:
        await stopping.wait()
        self.close()

    async def forward_if_elsewhere(self) -> Response | None:
        """The owner's answer when another node owns the request's session; None to answer here."""
        scope = self._routes.get(request.endpoint or "")
        if scope is None or request.method == "OPTIONS":
            return None
        session_id = await self._session_of(scope)
        if session_id is None:
            return None
        forwarded = bool(request.headers.get(FORWARDED_BY))
        try:
            # A new session sent here by another node's placement is created here: placing it
            # again could pick a third node as the loads change, and a forwarded request never
            # travels further.
            owner = await self.locator.owner(session_id, create=scope.creates and not forwarded)
        except DatabaseUnavailable:
            raise ClusterUnavailable(
                f"cannot tell which node owns session '{session_id}': the cluster database is "
                "unavailable; retry"
            ) from None
        if owner is None or owner.node_id == self.node_id:
            return None
        if forwarded:
            self.outcomes["moving"] += 1
            raise SessionMoving(f"session '{session_id}' is moving to another node; retry")
        try:
            response = await self._forward(owner, session_id, scope)
        except (OwnerUnreachable, OwnerFailed, OwnerTimedOut) as error:
            self.outcomes[_OUTCOME_OF[type(error)]] += 1
            raise
        self.outcomes["answered"] += 1
        return response

    async def _session_of(self, scope: RouteScope) -> str | None:
        """The one session the request is for; None when it names none or several (the route
        itself answers those), or an invalid id (the route says why)."""
        if _streamed(scope):
            found = await self._form_session()
        else:
            if scope.only_if_named and not request.args.getlist("session_id"):
                return None
            named = await named_sessions()
            found = next(iter(named)) if len(named) == 1 else None
        try:
            return None if found is None else validate_session_id(found)
        except InvalidSessionId:
            return None

    async def _form_session(self) -> str | None:
        given = request.args.getlist("session_id")
        if len(given) > 1:
            return None
        session_id = given[0] if given else await self._read_form_session()
        if session_id is not None:
            require_access(session_id)  # the route's own check for a session key, before it leaves
        return session_id

    async def _read_form_session(self) -> str | None:
        try:
            boundary = boundary_of(request.content_type or "")
        except InvalidRequest:  # no boundary: the route refuses it
            return None
        max_bytes = current_app.extensions["waservice.max_media_bytes"] + FORM_OVERHEAD
        ahead = ReadAhead(current_app.extensions["waservice.messaging"].spool, max_bytes)
        g.setdefault(_READ_AHEAD, []).append(ahead)
        timeout = current_app.config["BODY_TIMEOUT"]  # as the route bounds its own read
        try:
            with trio.fail_after(timeout):
                session_id, understood = await find_form_session(request.body, boundary, ahead)
        except trio.TooSlowError:
            raise RequestTimeout(
                f"the upload did not arrive within {timeout:g} s (server.body_timeout)"
            ) from None
        request.body = PrefixedBody(ahead, request.body)  # whoever reads next reads it all
        if not understood:
            return None
        return DEFAULT_SESSION if session_id is None else session_id

    async def _forward(self, owner: Owner, session_id: str, scope: RouteScope) -> Response:
        if _streamed(scope):  # an upload: sent on as it arrives, within the route's own time bound
            body: bytes | Any = request.body
            upload_time = current_app.config["BODY_TIMEOUT"]
        else:  # small, or JSON the route reads whole anyway: in memory already (named_sessions)
            body, upload_time = await request.get_data(cache=True, as_text=False), 0.0
        return await self.relay.forward(owner.url, owner.node_id, session_id, body, upload_time=upload_time)

    async def _name_node(self, response: Response) -> Response:
        response.headers.setdefault(NODE_HEADER, self.node_id)  # a forwarded answer has its owner's
        return response


_OUTCOME_OF = {OwnerUnreachable: "unreachable", OwnerFailed: "failed", OwnerTimedOut: "timed_out"}
OUTCOMES = ("answered", "unreachable", "failed", "timed_out", "moving")


class _OutcomeCollector(Collector):
    def __init__(self, outcomes: collections.Counter[str]) -> None:
        self._outcomes = outcomes

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "waservice_forwarded_requests",
            "Requests for a session another node owns, by outcome: answered (whatever the owner said), "
            "unreachable (503), failed (502: broken after sending), timed_out (504), moving (a "
            "request forwarded here for a session this node does not own: 503)",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            family.add_metric([outcome], self._outcomes[outcome])
        yield family


def _streamed(scope: RouteScope) -> bool:
    return scope.in_form and request.mimetype == "multipart/form-data"


async def _delete_read_ahead(_: BaseException | None) -> None:
    for ahead in g.pop(_READ_AHEAD, ()):
        await ahead.delete()
