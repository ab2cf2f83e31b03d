"""The HTTP exchange with a session's owner: the caller's request sent on, the owner's answer relayed.

The request keeps its method, raw path and query, body and end-to-end headers (the credentials,
Idempotency-Key, Host and Origin: the owner runs the same guards and checks); hop-by-hop headers go.
Bodies stream both ways, so an upload, an SSE stream or a media download is never held in memory.

Statuses when the exchange itself fails (never the owner's own answers, which pass unchanged):
- 503 with Retry-After: the owner could not be reached (nothing was sent: safe to retry);
- 504: it took the request and did not answer within `timeout`;
- 502: the connection broke after the request was sent (the outcome is unknown, as for a send
  that WhatsApp never acknowledged).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterator

import httpx
import trio
from quart import Response, request

from ..errors import OwnerFailed, OwnerTimedOut, OwnerUnreachable

log = logging.getLogger("waservice.cluster")

FORWARDED_BY = "X-Waservice-Forwarded-By"
# RFC 9110 7.6.1, and what proxies add for themselves.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Not sent on: the length is recomputed for a body in memory; quart puts the peer's address in
# Remote-Addr (and a client may send one too); `Expect: 100-continue` was answered here already.
NOT_SENT = frozenset({"content-length", "remote-addr", "expect", FORWARDED_BY.lower()})
# The server that answers the caller adds these itself: the owner's copies would double them.
NOT_RELAYED = frozenset({"date", "server"})
EVENT_STREAM = "text/event-stream"
_NO_AUTH = httpx.Auth()  # the base class sends the request as it is


class Relay:
    """One pooled HTTP client for every forwarded request of this node."""

    def __init__(
        self,
        node_id: str,
        *,
        timeout: float,
        connect_timeout: float = 5.0,
        idle_expiry: float = 4.0,
        max_connections: int = 1000,
    ) -> None:
        """`idle_expiry`: keep an idle connection this long; below the owners' server.keep_alive_timeout
        (5 s by default), so a request never goes out on a connection the owner is closing."""
        self.node_id = node_id
        self.timeout = timeout
        self.closing = False
        self._reads: set[trio.CancelScope] = set()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=connect_timeout, pool=connect_timeout, write=None, read=None),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=min(max_connections, 100),
                keepalive_expiry=idle_expiry,
            ),
            follow_redirects=False,  # the owner's redirect is the caller's to follow
            trust_env=False,  # node to node: no HTTP(S)_PROXY, no .netrc credentials
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def close_streams(self) -> None:
        """The node is stopping: every answer still being relayed ends now."""
        self.closing = True
        for scope in self._reads:
            scope.cancel()

    @contextlib.contextmanager
    def open_stream(self) -> Iterator[trio.CancelScope]:
        """Around each read of an answer: cancelled by `close_streams()`."""
        with trio.CancelScope() as scope:
            if self.closing:
                scope.cancel()
            self._reads.add(scope)
            try:
                yield scope
            finally:
                self._reads.discard(scope)

    async def forward(
        self,
        base_url: str,
        owner_id: str,
        session_id: str,
        body: bytes | AsyncIterable[bytes],
        *,
        upload_time: float = 0.0,
    ) -> Response:
        """Send the current request to the owner at `base_url`; its answer, streaming.

        `upload_time`: how long a streamed body may take to arrive from the caller, on top of
        `timeout` (which starts once the body is sent)."""
        what = f"session '{session_id}' is owned by node '{owner_id}'"
        deadline = trio.CancelScope(deadline=trio.current_time() + upload_time + self.timeout)
        if not isinstance(body, bytes):
            body = _then_wait(body, deadline, self.timeout)
        try:
            outgoing = self._client.build_request(
                request.method, _target(base_url), headers=self._headers(body), content=body or None
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            log.warning("%s, which advertises no usable URL: %s", what, type(exc).__name__)
            raise OwnerUnreachable(f"{what}, which advertises no usable URL") from None
        answer: httpx.Response | None = None
        try:
            with deadline:
                # No auth of our own: the caller's Authorization goes through untouched (httpx would
                # replace it with Basic auth from credentials in the owner's URL).
                answer = await self._client.send(outgoing, stream=True, auth=_NO_AUTH)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            log.warning("%s, which cannot be reached: %s", what, _reason(exc))
            raise OwnerUnreachable(f"{what}, which cannot be reached; retry") from None
        except httpx.PoolTimeout:
            raise OwnerUnreachable(f"{what}; this node has too many requests open to it; retry") from None
        except httpx.TransportError as exc:
            log.warning("%s; the exchange broke: %s", what, _reason(exc))
            raise OwnerFailed(
                f"{what}; the connection to it broke before its answer (outcome unknown)"
            ) from None
        if answer is None:
            raise OwnerTimedOut(f"{what}, which did not answer within {self.timeout:g} s")
        headers = [(k, v) for k, v in answer.headers.multi_items() if _relayed(k)]
        streaming = answer.headers.get("content-type", "").startswith(EVENT_STREAM)
        relayed = Response(
            _AnswerBody(answer, None if streaming else self.timeout, what, self),
            status=answer.status_code,
            headers=headers,
        )
        relayed.timeout = None  # quart's RESPONSE_TIMEOUT would cut event streams and downloads
        return relayed

    def _headers(self, body: bytes | AsyncIterable[bytes]) -> list[tuple[str, str]]:
        named = {token.strip().lower() for token in request.headers.get("Connection", "").split(",")}
        headers = [
            (name, value)
            for name, value in request.headers.items()
            if (lowered := name.lower()) not in HOP_BY_HOP
            and lowered not in NOT_SENT
            and lowered not in named
        ]
        if not isinstance(body, bytes) and request.content_length is not None:
            headers.append(("Content-Length", str(request.content_length)))  # the same bytes, streamed
        client = request.remote_addr
        if client:
            previous = request.headers.get("X-Forwarded-For")
            headers = [(k, v) for k, v in headers if k.lower() != "x-forwarded-for"]
            headers.append(("X-Forwarded-For", f"{previous}, {client}" if previous else client))
        headers.append((FORWARDED_BY, self.node_id))
        return headers


def _target(base_url: str) -> httpx.URL:
    """The owner's URL with the request's path and query exactly as the caller sent them."""
    raw_path = request.scope.get("raw_path") or request.path.encode()
    query = request.scope.get("query_string", b"")
    target = base_url.rstrip("/") + raw_path.decode("latin-1")
    return httpx.URL(target + ("?" + query.decode("latin-1") if query else ""))


def _relayed(name: str) -> bool:
    lowered = name.lower()
    return lowered not in HOP_BY_HOP and lowered not in NOT_RELAYED


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


async def _then_wait(
    body: AsyncIterable[bytes], deadline: trio.CancelScope, wait: float
) -> AsyncIterator[bytes]:
    """The body as it arrives; once it is all sent, the owner has `wait` seconds to answer."""
    async for chunk in body:
        yield chunk
    deadline.deadline = trio.current_time() + wait


class _AnswerBody:
    """The owner's answer body, chunk by chunk as it comes (the bytes as sent: no decoding)."""

    def __init__(self, answer: httpx.Response, idle: float | None, what: str, relay: Relay) -> None:
        self._answer = answer
        self._chunks = answer.aiter_raw()
        self._idle = idle  # None: an event stream, quiet for as long as nothing happens
        self._what = what
        self._relay = relay

    def __aiter__(self) -> _AnswerBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            with self._relay.open_stream() as scope:
                if self._idle is not None:
                    scope.deadline = trio.current_time() + self._idle
                return await anext(self._chunks)
            # Cancelled: the idle limit passed, or this node is stopping (then an event stream
            # ends here, not at the end of the shutdown grace; its client reconnects elsewhere).
            if self._idle is not None and trio.current_time() >= scope.deadline:
                log.warning("%s; its answer stalled for %g s and was cut", self._what, self._idle)
        except StopAsyncIteration:
            pass
        except httpx.TransportError as exc:
            # Its status is sent: all that can be said now is a cut (a short body, or an event
            # stream that ends; its client reconnects with Last-Event-ID).
            log.warning("%s; its answer was cut: %s", self._what, _reason(exc))
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):  # also when the caller left: free the connection
            await self._answer.aclose()
