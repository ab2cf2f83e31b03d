"""Rate limit on creating sessions, per client address: a pure token bucket and the check /connect makes."""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import trio
from quart import Quart, Response, current_app, jsonify, request

from ..errors import ServiceError, UnknownSession
from ..sessions.manager import SessionManager

EXTENSION = "waservice.create_limit"
MAX_TRACKED_CLIENTS = 10_000  # past this, idle clients' (full) buckets are forgotten


class RateLimited(ServiceError):
    status_code = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@attrs.define
class TokenBucket:
    """`burst` tokens, refilled at `per_second`; each action takes one. Time is passed in."""

    per_second: float
    burst: int
    tokens: float = attrs.field(default=attrs.Factory(lambda self: float(self.burst), takes_self=True))
    updated: float = 0.0

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 if one was there, else the seconds until one will be."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second

    def is_full(self, now: float) -> bool:
        return self.tokens + (now - self.updated) * self.per_second >= self.burst


class CreateRateLimit:
    """One token bucket per client address, with a bounded number of addresses remembered."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        clock: Callable[[], float] = trio.current_time,
        max_clients: int = MAX_TRACKED_CLIENTS,
    ) -> None:
        self.per_second = per_minute / 60
        self.burst = burst
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, client: str) -> float:
        """0.0 if `client` may create a session now, else the seconds it has to wait."""
        now = self._clock()
        bucket = self._buckets.pop(client, None)  # re-inserted last: the dict stays in use order
        if bucket is None:
            self._forget_idle(now)
            bucket = TokenBucket(self.per_second, self.burst, updated=now)
        self._buckets[client] = bucket
        return bucket.take(now)

    def _forget_idle(self, now: float) -> None:
        if len(self._buckets) < self._max_clients:
            return
        for client in [c for c, b in self._buckets.items() if b.is_full(now)]:
            del self._buckets[client]  # a full bucket is what a new client gets anyway
        while len(self._buckets) >= self._max_clients:
            del self._buckets[next(iter(self._buckets))]  # the least recently seen


def install_create_limit(app: Quart, per_minute: float, burst: int) -> None:
    """Limit new sessions per client address on `app`; per_minute 0 means no limit."""
    if per_minute > 0:
        app.extensions[EXTENSION] = CreateRateLimit(per_minute, burst)

    @app.errorhandler(RateLimited)
    async def rate_limited(error: RateLimited) -> Response:
        response = jsonify({"success": False, "error": error.message})
        response.status_code = error.status_code
        response.headers["Retry-After"] = str(math.ceil(error.retry_after))
        return response


def limit_new_session(manager: SessionManager, session_id: str) -> None:
    """Charge the caller one token if `session_id` is new; raise RateLimited if it has none left."""
    limit: CreateRateLimit | None = current_app.extensions.get(EXTENSION)
    if limit is None:
        return
    try:
        manager.get(session_id)
        return  # connecting an existing session creates nothing
    except UnknownSession:
        pass
    wait = limit.take(request.remote_addr or "unknown")
    if wait > 0:
        raise RateLimited(
            f"too many new sessions from this client (at most {limit.burst} at once, then "
            f"{limit.per_second * 60:g} per minute); retry in {math.ceil(wait)} s",
            retry_after=wait,
        )
