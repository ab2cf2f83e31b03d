"""A tiny HTTP/JSON control API for a simulator running in its own process (benchmarks).

``GET``: ``/phones``, ``/phones/<phone>``, ``/messages[?to=&kind=&id=]`` (with decoded ``kind`` and
``content``), ``/pairings``, ``/events[?kind=...]``, ``/stats``, ``/connections[?phone=]`` (the
connection log: ``{now, close_delay, intervals: [{conn, phone, device, logged_in_at, closed_at,
replaced_by, replaced_at}], overlaps: [{phone, device, first, second, start, end, duration, kick,
open}]}``, monotonic times; see ``connlog.py``).
``POST`` (JSON body): ``/scan {qr, phone}``, ``/stream-error {phone, code?, conflict?}``, ``/drop {phone}``,
``/refuse {on}``, ``/listen {on}``, ``/stall {xmlns: [...]}``, ``/stall-acks {phones: [...]}``,
``/fail-next-login {phone, reason?}``,
``/rotate-qr {connection_id?}``. Every answer is JSON; errors are ``{"error": ...}`` with 4xx.

Media: ``POST /contact-media {to, from, kind, data_b64, mimetype, caption?, file_name?, id?}`` → ``{"id"}``
(a real, downloadable file); ``GET /media`` → the host's ``hostname`` and counters. Pairing codes:
``GET /pair-codes`` (clients waiting for one), ``POST /enter-pair-code {phone, code}`` (returns once
``pair-success`` is sent; 400 for a wrong code).
Contacts (see ``contacts.py``): ``POST /contact-message {to, from, text}`` → ``{"id"}``; other kinds
with ``kind`` and the ``waproto`` builder's arguments, e.g. ``{to, from, kind: "image", caption}``,
``{kind: "location", latitude, longitude}``, ``{kind: "reaction", chat_jid, msg_id, emoji}``; an
optional ``id`` sets the message id. ``POST /receipt {to, from, ids, type?}``, ``/chatstate {to, from,
state?, media?}``, ``/presence {to, from, available?, last_seen?}``, ``/call-offer {to, from,
call_id?}``, ``/lose-receipts {phones}``. Load: ``POST /burst {to: [phones], per_phone, rate?, from?:
[contacts]}`` → the burst (``id``, ``total``); ``GET /bursts`` their progress. ``GET
/delivered[?phone=&summary=1]`` → ``{"count", "sent", "acked", "items": [{id, to, device, from,
queued_at, sent_at, acked_at, receipt, attempts, retries}]}``.
One request per connection (``Connection: close``), which is all a test client needs.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio

from . import waproto
from .server import CLOSE_DELAY, Simulator, SimulatorError

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


def _connections(sim: Simulator, query: dict[str, Any]) -> Any:
    """The connection log and its overlaps; ``now`` is the simulator's monotonic clock at the query."""
    phone = query.get("phone")
    return {
        "now": time.monotonic(),
        "close_delay": CLOSE_DELAY,
        "intervals": [i.as_dict() for i in sim.connection_intervals(phone)],
        "overlaps": [o.as_dict() for o in sim.connection_overlaps(phone)],
    }


async def _listen(sim: Simulator, body: dict[str, Any]) -> Any:
    if body.get("on", True):
        await sim.start_listening()
    else:
        await sim.stop_listening()
    return {"ok": True}


# kind → waproto builder; "text" in the body is the builders' first argument where they take one.
MESSAGE_KINDS: dict[str, Callable[..., bytes]] = {
    "text": waproto.text,
    "extended_text": waproto.extended_text,
    "image": waproto.image,
    "video": waproto.video,
    "audio": waproto.audio,
    "voice": lambda **kw: waproto.audio(ptt=True, **kw),
    "document": waproto.document,
    "sticker": waproto.sticker,
    "location": waproto.location,
    "contact": waproto.contact_card,
    "reaction": waproto.reaction,
    "edit": waproto.edit,
    "revoke": waproto.revoke,
}


async def _contact_message(sim: Simulator, body: dict[str, Any]) -> Any:
    fields = dict(body)
    to, sender = str(fields.pop("to")), str(fields.pop("from"))
    kind, msg_id = fields.pop("kind", "text"), fields.pop("id", None)
    builder = MESSAGE_KINDS.get(kind)
    if builder is None:
        raise ValueError(f"unknown message kind {kind!r}; one of {sorted(MESSAGE_KINDS)}")
    if kind in ("text", "extended_text"):
        fields["body"] = fields.pop("text")
    return {"id": await sim.send_message(to, sender, builder(**fields), msg_id)}


def _messages(sim: Simulator, query: dict[str, Any]) -> Any:
    """What devices sent, each with its decoded ``kind`` and ``content``; filters ``to``, ``kind``, ``id``."""
    wanted = {key: query[key] for key in ("to", "kind", "id") if key in query}
    found = (m.as_dict() for m in sim.messages)
    return [m for m in found if all(str(m.get(k)) == v.lstrip("+") for k, v in wanted.items())]


async def _contact_media(sim: Simulator, body: dict[str, Any]) -> Any:
    data = base64.b64decode(body["data_b64"], validate=True)
    msg_id = await sim.send_media(
        str(body["to"]),
        str(body["from"]),
        str(body["kind"]),
        data,
        str(body["mimetype"]),
        body.get("caption"),
        body.get("file_name"),
        body.get("id"),
    )
    return {"id": msg_id}


def _media(sim: Simulator, _: dict[str, Any]) -> Any:
    host = sim.media
    return {
        "hostname": host.hostname,
        "uploads": host.uploads,
        "downloads": host.downloads,
        "blobs": len(host.blobs),
    }


def _pair_codes(sim: Simulator, _: dict[str, Any]) -> Any:
    return [
        {
            "connection_id": p.connection_id,
            "phone": p.phone,
            "platform_display": p.platform_display,
            "requested_at": p.requested_at,
        }
        for p in sim.pending_pair_codes()
    ]


def _delivered(sim: Simulator, query: dict[str, Any]) -> Any:
    items = sim.delivered(query.get("phone"))
    summary = {
        "count": len(items),
        "sent": sum(d.sent_at is not None for d in items),
        "acked": sum(d.acked_at is not None for d in items),
    }
    if query.get("summary") in ("1", "true"):
        return summary
    return {**summary, "items": [d.as_dict() for d in items]}


def _burst(sim: Simulator, body: dict[str, Any]) -> Any:
    senders = body.get("from")
    burst = sim.start_burst(
        [str(p) for p in body["to"]],
        int(body["per_phone"]),
        float(body.get("rate", 0)),
        [senders] if isinstance(senders, str) else senders,
    )
    return burst.as_dict()


GET_ROUTES: dict[str, Handler] = {
    "/phones": _phones,
    "/messages": _messages,
    "/pairings": lambda sim, _: [
        {"connection_id": p.connection_id, "noise_key": p.noise_key_b64, "refs": list(p.refs)}
        for p in sim.pending_pairings()
    ],
    "/events": lambda sim, q: sim.events(q.get("kind")),
    "/stats": _stats,
    "/connections": _connections,
    "/delivered": _delivered,
    "/bursts": lambda sim, _: [b.as_dict() for b in sim.bursts],
    "/media": _media,
    "/pair-codes": _pair_codes,
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
    "/contact-message": _contact_message,
    "/contact-media": _contact_media,
    "/enter-pair-code": lambda sim, b: sim.enter_pair_code(str(b["phone"]), str(b["code"])),
    "/receipt": lambda sim, b: {
        "hit": sim.send_receipt(str(b["to"]), str(b["from"]), b["ids"], b.get("type"))
    },
    "/chatstate": lambda sim, b: {
        "hit": sim.send_chatstate(str(b["to"]), str(b["from"]), b.get("state", "composing"), b.get("media"))
    },
    "/presence": lambda sim, b: {
        "hit": sim.send_presence(
            str(b["to"]), str(b["from"]), bool(b.get("available", True)), b.get("last_seen")
        )
    },
    "/call-offer": lambda sim, b: {
        "call_id": sim.send_call_offer(str(b["to"]), str(b["from"]), b.get("call_id"))
    },
    "/lose-receipts": lambda sim, b: sim.lose_receipts(b.get("phones", [])),
    "/burst": _burst,
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
