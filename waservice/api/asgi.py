"""The ASGI entry hypercorn calls: the server's `send` runs shielded from quart-trio's cancellation.

Hypercorn queues `http.disconnect` *inside* the `send()` of the last body chunk, then carries on
in that same call: it closes the socket (`Connection: close`, HTTP/1.0) or re-arms the keep-alive
timer. quart-trio cancels the request's nursery as soon as it reads `http.disconnect`, so that
bookkeeping is cancelled halfway: the socket is never closed and the idle timer never restarts.

Shielding `send` lets the server finish its own bookkeeping. It cannot hang: the only blocking
step inside is hypercorn's socket write, which hypercorn already shields itself; a peer that stops
reading or vanishes is cut by the kernel (TCP_USER_TIMEOUT and keepalive, `waservice.tcp`).
"""

from __future__ import annotations

from typing import Any

import trio

Scope = dict[str, Any]
Message = dict[str, Any]


class ServerSafeSend:
    """ASGI middleware: each HTTP `send` runs to completion, whatever cancels the request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def safe_send(message: Message) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        await self.app(scope, receive, safe_send)
