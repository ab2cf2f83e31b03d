"""`Idempotency-Key` on the send routes: the same key and body within 24 h answers the first
response and sends nothing again (issue 9). Placeholder until the store lands: passes through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., Awaitable[object]])


def idempotent(route: F) -> F:
    """Decorate every route that sends a message (under the route decorators, above the docs)."""
    return route
