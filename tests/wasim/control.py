"""A tiny HTTP/JSON control API for a simulator running in its own process (benchmarks).

``GET``: ``/phones``, ``/phones/<phone>``, ``/messages``, ``/pairings``, ``/events[?kind=...]``, ``/stats``.
``POST`` (JSON body): ``/scan {qr, phone}``, ``/stream-error {phone, code?, conflict?}``, ``/drop {phone}``,
``/refuse {on}``, ``/listen {on}``, ``/stall {xmlns: [...]}``, ``/stall-acks {phones: [...]}``,
``/fail-next-login {phone, reason?}``,
``/rotate-qr {connection_id?}``. Every answer is JSON; errors are ``{"error": ...}`` with 4xx.
One request per connection (``Connection: close``), which is all a test client needs.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio

from .server import Simulator, SimulatorError

MAX_REQUEST = 1 << 20

Handler = Callable[[Simulator, dict[str, Any]], Awaitable[Any] | Any]


def _phones(sim: Simulator, _: dict[str, Any]) -> Any:
    return {phone: sim.phone_state(phone) for phone in sim.accounts if sim.accounts[phone].companions}


def _stats(sim: Simulator, _: dict[str, Any]) -> Any:
    return {
        "accepted_connections": sim.accepted_connections,
        "refused_connections": sim.refused_connections,
        "open_connections": len(sim.connections),
        "connected_phones": len(sim.connected_phones()),
        "messages": len(sim.messages),
        "logins": sum(sim.logins.values()),
        "failed_logins": sum(sim.failed_logins.values()),
    }


async def _listen(sim: Simulator, body: dict[str, Any]) -> Any:
    if body.get("on", True):
        await sim.start_listening()
    else:
        await sim.stop_listening()
    return {"ok": True}


GET_ROUTES: dict[str, Handler] = {
    "/phones": _phones,
    "/messages": lambda sim, _: [m.as_dict() for m in sim.messages],
    "/pairings": lambda sim, _: [
        {"connection_id": p.connection_id, "noise_key": p.noise_key_b64, "refs": list(p.refs)}
        for p in sim.pending_pairings()
    ],
    "/events": lambda sim, q: sim.events(q.get("kind")),
    "/stats": _stats,
}

POST_ROUTES: dict[str, Handler] = {
    "/scan": lambda sim, b: sim.scan_qr(b["qr"], str(b["phone"])),
    "/stream-error": lambda sim, b: {
        "hit": sim.stream_error(str(b["phone"]), b.get("code"), b.get("conflict"))
    },
    "/drop": lambda sim, b: {"hit": sim.drop(str(b["phone"]))},
    "/refuse": lambda sim, b: sim.refuse_connections(bool(b.get("on", True))),
    "/listen": _listen,
    "/stall": lambda sim, b: sim.stall(b.get("xmlns", [])),
    "/stall-acks": lambda sim, b: sim.stall_acks(b.get("phones", [])),
    "/fail-next-login": lambda sim, b: sim.fail_next_login(str(b["phone"]), str(b.get("reason", "401"))),
    "/rotate-qr": lambda sim, b: {"sent": sim.rotate_qr(b.get("connection_id"))},
}


async def _read_request(stream: trio.SocketStream) -> tuple[str, str, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ValueError("connection closed before the request ended")
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too large")
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        body += chunk
    return method.upper(), target, body[:length]


async def _dispatch(sim: Simulator, method: str, target: str) -> tuple[Handler | None, dict[str, Any]]:
    url = urlsplit(target)
    query = {key: values[-1] for key, values in parse_qs(url.query).items()}
    path = url.path.rstrip("/") or "/"
    if method == "GET" and path.startswith("/phones/"):
        phone = path.removeprefix("/phones/")
        return (lambda s, _: s.phone_state(phone)), query
    routes = GET_ROUTES if method == "GET" else POST_ROUTES if method == "POST" else {}
    return routes.get(path), query


async def handle_http(sim: Simulator, stream: trio.SocketStream) -> None:
    """Serve one request on ``stream`` and close it."""
    status, payload = 200, None
    try:
        method, target, body = await _read_request(stream)
        handler, query = await _dispatch(sim, method, target)
        if handler is None:
            status, payload = 404, {"error": f"no route for {method} {target}"}
        else:
            arguments = json.loads(body) if method == "POST" and body else query
            result = handler(sim, arguments)
            if isinstance(result, Awaitable):
                result = await result
            payload = {"ok": True} if result is None else result
    except (SimulatorError, KeyError, ValueError, TypeError) as exc:
        status, payload = 400, {"error": f"{type(exc).__name__}: {exc}"}
    raw = json.dumps(payload, default=str).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        await stream.send_all(head + raw)
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


async def serve_control(
    sim: Simulator,
    port: int,
    host: str = "127.0.0.1",
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control API until cancelled; ``nursery.start`` returns the bound port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, lambda stream: handle_http(sim, stream), listeners)
        task_status.started(bound)
