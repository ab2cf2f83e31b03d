"""One delivery attempt over HTTP: POST the body, read a few KiB of the answer, report what happened.

No redirects are followed (a 3xx is a failed attempt), no proxy settings are read from the
environment (a receiver on localhost must not go through one), and connections are pooled.
"""

from __future__ import annotations

import time
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import trio

from .. import __version__
from .schedule import Answered, Outcome, Unreachable, retry_after

READ_AT_MOST = 4096  # bytes of a response body read (then dropped): enough to let the server finish
USER_AGENT = f"waservice/{__version__} (webhooks)"


class Sender(Protocol):
    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Outcome: ...


class HttpSender:
    """One pooled client per receiver origin: httpcore scans its whole pool on every request, so
    small pools (one per receiver, `connections` each) stay cheap where one big pool would not."""

    def __init__(self, timeout: float = 10.0, retry_after_cap: float = 3600.0, connections: int = 16) -> None:
        self.timeout = timeout
        self.retry_after_cap = retry_after_cap
        self._connections = connections
        self._clients: dict[tuple[str, str, int | None], httpx.AsyncClient] = {}

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        try:
            client = self._client(url)
            # httpx's timeout is per read; this bounds the whole exchange (a trickling answer too).
            with trio.fail_after(self.timeout):
                async with client.stream("POST", url, content=body, headers=headers) as response:
                    await _read_some(response)
                    header = response.headers.get("retry-after")
                    return Answered(
                        response.status_code, retry_after(header, time.time(), self.retry_after_cap)
                    )
        except (trio.TooSlowError, httpx.TimeoutException):
            return Unreachable(f"no answer within {self.timeout:g} s")
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
            # The exception's text names the failure (refused, reset, DNS), never the request's headers.
            return Unreachable(f"{type(exc).__name__}: {exc}"[:200])

    def _client(self, url: str) -> httpx.AsyncClient:
        parts = urlsplit(url)
        origin = (parts.scheme, parts.hostname or "", parts.port)
        client = self._clients.get(origin)
        if client is None:
            client = self._clients[origin] = httpx.AsyncClient(
                follow_redirects=False,
                timeout=self.timeout,
                trust_env=False,
                limits=httpx.Limits(
                    max_connections=self._connections, max_keepalive_connections=self._connections
                ),
                headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            )
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


async def _read_some(response: httpx.Response) -> None:
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= READ_AT_MOST:
            break  # closing the stream drops the connection rather than reading a large body
