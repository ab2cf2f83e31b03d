"""`Idempotency-Key` on the send routes, so that a client may retry a send it never heard back from.

Within 24 h, the same key from the same caller (the admin key, or one session key) for the same
session and the same request (method, path and body) answers the first answer again, and sends
nothing. The same key with another request is a 422; while the first is still running, a 409.

What is remembered: a 2xx always; a 4xx only once the request handed a message to the engine (a
refusal before that did nothing, so a retry, say once the session is connected, runs anew); never a
5xx, a 408 or a 429, which the client is told it may retry. Answers live in waservice.db
(store/idempotency.py) and survive a restart; requests in flight live here, in memory.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
from quart import Quart, Response, current_app, request

from ..errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidRequest,
    ServiceError,
    StorageFailed,
)
from ..sessions.sendqueue import finish_once_handed_over
from ..store import EventStore
from ..store.idempotency import IdempotencyTable, StoredAnswer
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


Slot = tuple[str, str, str]  # (caller scope, session, key)


class IdempotencyKeys:
    """The remembered answers (in the event log's database) and the requests in flight."""

    def __init__(self, store: EventStore, table: IdempotencyTable, ttl: float = TTL) -> None:
        self._store = store
        self._table = table
        self.ttl = ttl
        self._in_flight: dict[Slot, bytes] = {}  # slot -> fingerprint

    @classmethod
    async def open(cls, store: EventStore, ttl: float = TTL) -> IdempotencyKeys:
        return cls(store, await store.call(IdempotencyTable, store.connection), ttl)

    @asynccontextmanager
    async def claim(self, slot: Slot, fingerprint: bytes) -> AsyncIterator[StoredAnswer | None]:
        """Hold the key while the request runs; yields the stored answer if there is one.

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
            stored = await self._store.call(self._table.get, *slot, time.time() - self.ttl)
            if stored is not None and stored.fingerprint != fingerprint:
                raise _reused()
            yield stored
        finally:
            del self._in_flight[slot]

    async def remember(self, slot: Slot, answer: StoredAnswer) -> None:
        try:
            await self._store.call(self._table.put, *slot, answer)
        except StorageFailed as exc:  # the send happened: answer it; only a retry would repeat it
            log.error("could not remember the answer for an %s: %s", HEADER, exc)

    async def prune_forever(self, interval: float = PRUNE_INTERVAL) -> None:
        """Forget answers older than the TTL, now and then every `interval` seconds."""
        while True:
            try:
                pruned = await self._store.call(self._table.prune, time.time() - self.ttl)
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


def idempotent(route: F) -> F:
    """Decorate every route that sends a message (under the route decorators, above the docs)."""

    @functools.wraps(route)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        keys: IdempotencyKeys | None = current_app.extensions.get(EXTENSION)
        key = request.headers.get(HEADER)
        if key is None or keys is None:
            return await route(*args, **kwargs)
        if not _VALID_KEY.fullmatch(key):
            raise InvalidRequest(f"{HEADER} must be 1-255 printable ASCII characters")
        sessions = ",".join(sorted(await named_sessions()))
        who = caller()
        slot = ("admin" if who.is_admin else f"key:{who.key_id}", sessions, key)
        fingerprint = await _fingerprint(sessions)
        async with keys.claim(slot, fingerprint) as stored:
            if stored is not None:
                return _replay(stored)
            return await _run_and_remember(keys, slot, fingerprint, route(*args, **kwargs))

    setattr(wrapper, _IDEMPOTENT, True)
    return wrapper  # type: ignore[return-value]


async def _run_and_remember(
    keys: IdempotencyKeys, slot: Slot, fingerprint: bytes, running: Awaitable[Any]
) -> Response:
    # Once a message is handed over, the request finishes even if its client goes away: the
    # answer must be remembered, or a retry would send the message again.
    with finish_once_handed_over() as handover:
        try:
            response = await current_app.make_response(await running)
        except ServiceError as error:
            status = status_for(error)
            if _remembered(status, handover.happened):
                body = current_app.json.dumps({"success": False, "error": error.message}).encode()
                await keys.remember(slot, StoredAnswer(fingerprint, status, body, time.time()))
            raise
        if _remembered(response.status_code, handover.happened):
            body = await response.get_data(as_text=False)
            await keys.remember(slot, StoredAnswer(fingerprint, response.status_code, body, time.time()))
        return response


def _remembered(status: int, handed_over: bool) -> bool:
    if 200 <= status < 300:
        return True
    return 400 <= status < 500 and status not in _NOT_REMEMBERED and handed_over


def _replay(stored: StoredAnswer) -> Response:
    response = Response(stored.body, status=stored.status, mimetype="application/json")
    response.headers[REPLAYED] = "true"
    return response


async def _fingerprint(sessions: str) -> bytes:
    body = await request.get_data(cache=True, as_text=False)
    boundary = request.mimetype_params.get("boundary") if request.mimetype == "multipart/form-data" else None
    if boundary:  # a browser picks a new one for each submission of the same form
        body = body.replace(boundary.encode("latin-1"), b"")
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), sessions.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


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
    """The header parameter, and its 409 and 422, on every route marked idempotent."""
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
