"""The ASGI entry hypercorn calls: makes the server's `send` safe to call from a quart-trio request.

Two faults live between quart-trio 0.12 and hypercorn 0.18, and both surface in `send`:

1. Hypercorn queues `http.disconnect` *inside* the `send()` of the last body chunk, then carries on
   in that same call: it closes the socket (`Connection: close`, HTTP/1.0) or re-arms the keep-alive
   timer. quart-trio cancels the request's nursery as soon as it reads `http.disconnect`, so that
   bookkeeping is cancelled halfway: the socket is never closed and the idle timer never restarts.
   Shielding `send` lets the server finish its own bookkeeping. It cannot hang: the only blocking
   step inside is hypercorn's socket write, which hypercorn already shields itself; a peer that
   stops reading or vanishes is cut by the kernel (TCP_USER_TIMEOUT and keepalive, `waservice.tcp`).

2. When the client goes away while the app answers (e.g. it gives up on a slow upload just as the
   408 is sent), hypercorn's reader closes the connection with `send_eof()` without taking the
   send lock, and the app's concurrent `send_all` raises `BusyResourceError`. The connection is
   already being closed, so the response has nowhere to go: drop it like any write to a gone client.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

log = logging.getLogger("waservice.api")

Scope = dict[str, Any]
Message = dict[str, Any]


class ServerSafeSend:
    """ASGI middleware: each HTTP `send` runs shielded, and a send racing the server's close is dropped."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def safe_send(message: Message) -> None:
            with trio.CancelScope(shield=True):
                try:
                    await send(message)
                except trio.BusyResourceError:
                    log.debug("client went away while %s was answered", scope.get("path"))

        await self.app(scope, receive, safe_send)
