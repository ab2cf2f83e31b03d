"""Checks that run before any route: what a hostile web page could make a visitor's browser send.

- DNS rebinding: a page on evil.example re-points its name at 127.0.0.1 and reads the API as
  "same origin". The browser still sends `Host: evil.example`, so without an API key only loopback
  names and configured `server.allowed_hosts` are served.
- Cross-site requests: a form or `fetch(..., {mode: "no-cors"})` from another site reaches the API
  with the visitor's network position. Browsers always send `Origin` on such POSTs and DELETEs; a
  state-changing request from an origin that is not the service's own is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from quart import request

from ..config import is_loopback
from ..errors import Forbidden

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def hostname(host: str) -> str:
    """'LocalHost.:3002' -> 'localhost', '[::1]:3002' -> '::1' (no validation)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.removesuffix(".")


class HostGuard:
    """Serve only requests addressed to a loopback name or an allowed host."""

    def __init__(self, allowed_hosts: Iterable[str]) -> None:
        self.allowed = frozenset(hostname(h) for h in allowed_hosts)

    def is_allowed(self, host: str) -> bool:
        name = hostname(host)
        return is_loopback(name) or name in self.allowed

    async def check(self) -> None:
        host = request.headers.get("Host")
        if host and not self.is_allowed(host):  # absent or empty: HTTP/1.0, never a browser
            raise Forbidden(
                f"host '{host}' is not served: without an API key only loopback names are; "
                "add the name to server.allowed_hosts (or set an API key) to serve it"
            )


class OriginGuard:
    """Refuse state-changing requests that a browser sends on behalf of another site."""

    def __init__(self, allowed_hosts: Iterable[str]) -> None:
        self.allowed = frozenset(hostname(h) for h in allowed_hosts)

    def is_own(self, origin: str, host: str) -> bool:
        netloc = urlsplit(origin).netloc.lower()
        if not netloc:  # "null" (sandboxed frames, file: pages) or garbage
            return False
        # The same authority the request was sent to, whatever the scheme a TLS proxy removed.
        return netloc == host.strip().lower() or hostname(netloc) in self.allowed

    async def check(self) -> None:
        if request.method in SAFE_METHODS:
            return
        origin = request.headers.get("Origin")
        if origin is not None and not self.is_own(origin, request.headers.get("Host", "")):
            raise Forbidden(
                f"cross-site request refused: Origin '{origin}' is not this service; "
                "call the API from its own page, or without a browser"
            )
