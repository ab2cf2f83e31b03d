"""`Idempotency-Key` on the send routes, so that a client may retry a send it never heard back from.

Within 24 h, the same key from the same caller (the admin key, or one session key) for the same
session and the same request (method, path and body) answers the first answer again, and sends
nothing. The same key with another request is a 422; while the first is still running, a 409.

What is remembered: a 2xx always; a 4xx only once the request handed a message to the engine (a
refusal before that did nothing, so a retry, say once the session is connected, runs anew); never a
5xx, a 408 or a 429, which the client is told it may retry. Answers live in waservice.db
(store/idempotency.py), or in PostgreSQL for several nodes (cluster/idempotency.py), and survive a
restart; requests in flight live here, in memory (a session's requests all reach its owner).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import trio
from quart import Quart, Response, current_app, request

from ..errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidRequest,
    ServiceError,
    StorageFailed,
)
from ..sessions.sendqueue import FinishingRequests, checked_before_queueing
from ..store import EventStore
from ..store.idempotency import AnswerTable, LogAnswers, StoredAnswer
from .caller import caller, named_sessions
from .status import status_for

log = logging.getLogger("waservice.idempotency")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"  # on an answer given again: "true"
EXTENSION = "waservice.idempotency"
TTL = 24 * 3600.0
PRUNE_INTERVAL = 3600.0
_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")  # printable ASCII
_NOT_REMEMBERED = {408, 409, 429}  # the client may retry these (and any 5xx)
_IDEMPOTENT = "_waservice_idempotent"
UPFRONT_MAX = 1024 * 1024  # bodies up to this size are read before the route runs


Slot = tuple[str, str, str]  # (caller scope, session, key)


class IdempotencyKeys:
    """The remembered answers (in `answers`) and the requests in flight."""

    def __init__(self, answers: AnswerTable, ttl: float = TTL) -> None:
        self._answers = answers
        self.ttl = ttl
        self._in_flight: dict[Slot, bytes] = {}  # slot -> fingerprint
        # Keyed requests finish once their message is handed over, so their answer is remembered;
        # server.py releases them at shutdown.
        self.finishing = FinishingRequests()

    @classmethod
    async def open(cls, store: EventStore, ttl: float = TTL) -> IdempotencyKeys:
        """One box's: the answers beside the event log."""
        return cls(await LogAnswers.open(store), ttl)

    async def claim(self, slot: Slot, fingerprint: bytes) -> StoredAnswer | None:
        """Hold the key for a request (until `release`); the answer stored for it, if any.

        Raises IdempotencyKeyInUse or IdempotencyKeyReused rather than run a second request."""
        running = self._in_flight.get(slot)
        if running is not None:
            if running != fingerprint:
                raise _reused()
            raise IdempotencyKeyInUse(
                f"a request with this {HEADER} is still being processed; retry once it has finished"
            )
        self._in_flight[slot] = fingerprint  # before any await: a second request sees it
        try:
            stored = await self._answers.get(*slot, time.time() - self.ttl)
            if stored is not None and stored.fingerprint != fingerprint:
                raise _reused()
        except BaseException:
            del self._in_flight[slot]
            raise
        return stored

    def release(self, slot: Slot) -> None:
        self._in_flight.pop(slot, None)

    async def remember(self, slot: Slot, answer: StoredAnswer) -> None:
        try:
            await self._answers.put(*slot, answer)
        except StorageFailed as exc:  # the send happened: answer it; only a retry would repeat it
            log.error("could not remember the answer for an %s: %s", HEADER, exc)

    async def prune_forever(self, interval: float = PRUNE_INTERVAL) -> None:
        """Forget answers older than the TTL, now and then every `interval` seconds."""
        while True:
            try:
                pruned = await self._answers.prune(time.time() - self.ttl)
                if pruned:
                    log.info("forgot %d idempotency key(s) older than %g h", pruned, self.ttl / 3600)
            except StorageFailed as exc:
                log.warning("could not prune idempotency keys: %s", exc)
            await trio.sleep(interval)


def _reused() -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"this {HEADER} was already used for a different request (method, path, session or body); "
        "use a new key for a new request"
    )


def install_idempotency(app: Quart, keys: IdempotencyKeys) -> None:
    app.extensions[EXTENSION] = keys


@attrs.define
class _Keyed:
    """One request's key: claimed once its session and body are known, released when it ends."""

    keys: IdempotencyKeys
    scope: str  # who asks
    key: str
    slot: Slot | None = None
    fingerprint: bytes = b""

    async def claim(self, session: str, body_digest: bytes) -> StoredAnswer | None:
        fingerprint = _fingerprint(session, body_digest)
        slot = (self.scope, session, self.key)
        stored = await self.keys.claim(slot, fingerprint)
        self.slot, self.fingerprint = slot, fingerprint
        return stored

    async def remember(self, status: int, body: bytes) -> None:
        if self.slot is not None:
            await self.keys.remember(self.slot, StoredAnswer(self.fingerprint, status, body, time.time()))

    def release(self) -> None:
        if self.slot is not None:
            self.keys.release(self.slot)


class _Replay(Exception):  # a signal, not an error: the stored answer is the answer
    def __init__(self, stored: StoredAnswer) -> None:
        super().__init__("answered from the Idempotency-Key")
        self.stored = stored


def idempotent(route: F) -> F:
    """Decorate every route that sends a message (under the route decorators, above the docs).

    A JSON body up to UPFRONT_MAX bytes is read first and the key checked before the route runs.
    A larger one, or a form (a media upload, which the route streams to disk), is hashed as the
    route reads it, and the key checked when the route sends, with the session that sends."""

    @functools.wraps(route)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        keys: IdempotencyKeys | None = current_app.extensions.get(EXTENSION)
        key = request.headers.get(HEADER)
        if key is None or keys is None:
            return await route(*args, **kwargs)
        if not _VALID_KEY.fullmatch(key):
            raise InvalidRequest(f"{HEADER} must be 1-255 printable ASCII characters")
        who = caller()
        keyed = _Keyed(keys, "admin" if who.is_admin else f"key:{who.key_id}", key)
        try:
            if _read_up_front():
                sessions = ",".join(sorted(await named_sessions()))
                body = _without_boundary(await request.get_data(cache=True, as_text=False))
                stored = await keyed.claim(sessions, hashlib.sha256(body).digest())
                if stored is not None:
                    return _replay(stored)
                return await _run_and_remember(keyed, route(*args, **kwargs))
            return await _streamed(keyed, route(*args, **kwargs))
        finally:
            keyed.release()

    setattr(wrapper, _IDEMPOTENT, True)
    return wrapper  # type: ignore[return-value]


def _read_up_front() -> bool:
    """A small JSON body names its session: check the key before the route runs. A form names it
    in a part, and a large body is the route's to stream: check when the route sends."""
    small = request.content_length is not None and request.content_length <= UPFRONT_MAX
    return small and request.mimetype != "multipart/form-data"


async def _streamed(keyed: _Keyed, running: Awaitable[Any]) -> Response:
    body = _HashingBody(request.body, _boundary())
    request.body = body  # the route reads through it

    async def at_send(session_id: str) -> None:
        stored = await keyed.claim(session_id, body.digest())
        if stored is not None:
            raise _Replay(stored)

    with checked_before_queueing(at_send):
        try:
            return await _run_and_remember(keyed, running)
        except _Replay as replay:
            return _replay(replay.stored)


async def _run_and_remember(keyed: _Keyed, running: Awaitable[Any]) -> Response:
    # Once a message is handed over, the request finishes even if its client goes away: the
    # answer must be remembered, or a retry would send the message again.
    with keyed.keys.finishing.finish_once_handed_over() as handover:
        try:
            response = await current_app.make_response(await running)
        except ServiceError as error:
            status = status_for(error)
            if _remembered(status, handover.happened):
                await keyed.remember(status, current_app.json.dumps(_error_body(error)).encode())
            raise
        if _remembered(response.status_code, handover.happened):
            await keyed.remember(response.status_code, await response.get_data(as_text=False))
        return response


def _error_body(error: ServiceError) -> dict[str, Any]:
    return {"success": False, "error": error.message}


def _remembered(status: int, handed_over: bool) -> bool:
    if 200 <= status < 300:
        return True
    return 400 <= status < 500 and status not in _NOT_REMEMBERED and handed_over


def _replay(stored: StoredAnswer) -> Response:
    response = Response(stored.body, status=stored.status, mimetype="application/json")
    response.headers[REPLAYED] = "true"
    return response


def _fingerprint(session: str, body_digest: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), session.encode(), body_digest):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def _boundary() -> bytes | None:
    """A multipart body's boundary: a browser picks a new one for each submission of a form, so
    the fingerprint leaves it out."""
    boundary = request.mimetype_params.get("boundary") if request.mimetype == "multipart/form-data" else None
    return boundary.encode("latin-1") if boundary else None


def _without_boundary(body: bytes) -> bytes:
    boundary = _boundary()
    return body.replace(boundary, b"") if boundary else body


class _BoundaryStripper:
    """`data.replace(boundary, b"")` over a stream, whatever its chunks: the last len(boundary) - 1
    bytes wait for the next chunk, since a boundary may start in them."""

    def __init__(self, boundary: bytes | None) -> None:
        self._boundary = boundary or b""
        self._keep = max(0, len(self._boundary) - 1)
        self.tail = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self.tail + chunk
        if self._boundary:
            data = data.replace(self._boundary, b"")
        cut = max(0, len(data) - self._keep)
        out, self.tail = data[:cut], data[cut:]
        return out


class _HashingBody:
    """The request body as the route reads it (iterated or awaited), hashed on the way."""

    def __init__(self, body: Any, boundary: bytes | None) -> None:
        self._body = body
        self._hash = hashlib.sha256()
        self._stripper = _BoundaryStripper(boundary)
        self._awaited: Any = None

    def __aiter__(self) -> _HashingBody:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._body.__anext__()
        self._hash.update(self._stripper.feed(bytes(chunk)))
        return chunk

    def __await__(self) -> Any:
        return self._whole().__await__()

    async def _whole(self) -> Any:
        if self._awaited is None:
            self._awaited = await self._body
            self._hash.update(self._stripper.feed(bytes(self._awaited)))
        return self._awaited

    def __getattr__(self, name: str) -> Any:  # clear() and the like
        return getattr(self._body, name)

    def digest(self) -> bytes:
        """The body read so far, boundaries left out."""
        final = self._hash.copy()
        final.update(self._stripper.tail)
        return final.digest()


# -- OpenAPI ------------------------------------------------------------------------------------

_PARAMETER = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: within 24 h the same key with the same request answers the first "
        "answer again and sends nothing (a 409 while the first is still running, a 422 if the "
        "request differs). 1-255 printable ASCII characters, e.g. a UUID per message."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
}


def document_idempotency(app: Quart, paths: dict[str, Any]) -> None:
    """The header parameter, and its 409 and 422, on every route marked idempotent; and, since
    each of them sends through a session's queue, the 429 of a full one."""
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        if view is None or not getattr(view, _IDEMPOTENT, False):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            operation = paths.get(path, {}).get(method.lower())
            if operation is None:
                continue
            operation.setdefault("parameters", []).append(dict(_PARAMETER))
            responses = operation.setdefault("responses", {})
            error = next((r for c, r in responses.items() if str(c).startswith("4")), None)
            for code, what in ((409, "The key's first request is still running"), (422, "Key reused")):
                responses.setdefault(code, {**(error or {}), "description": what})
            if not any(str(code) == "429" for code in responses):
                responses[429] = {
                    **(error or {}),
                    "description": "The session's send queue is full; retry after Retry-After seconds",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                }
