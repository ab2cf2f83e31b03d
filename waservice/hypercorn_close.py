"""A fix for hypercorn 0.18's trio connection close, applied once at start-up (see `serve_forever`).

`TCPServer._close()` calls `stream.send_eof()` without taking the connection's `send_lock`, and
`send_eof` holds trio's send-conflict detector across a checkpoint. When a client goes away while
it is being answered (a slow upload giving up just as its 408 is sent), one task closes while
another writes under the lock: the writer gets `BusyResourceError`. In the app's task that is a
traceback in the log; in hypercorn's reader task (its own 400 for the broken request) nothing
catches it and it ends the whole server.

The `send_eof()` buys nothing there: `aclose()` follows at once, and closing a TCP socket sends the
same FIN (or the same RST, when unread data is left). Without it, a concurrent writer sees the
socket closed (`ClosedResourceError`), which hypercorn already handles as a gone client.
"""

from __future__ import annotations

from hypercorn.trio.tcp_server import TCPServer


async def _close(self: TCPServer) -> None:
    await self.stream.aclose()


def close_without_send_eof() -> None:
    """Replace `TCPServer._close` (idempotent). Drop this once hypercorn closes under its send lock."""
    TCPServer._close = _close  # type: ignore[method-assign]
