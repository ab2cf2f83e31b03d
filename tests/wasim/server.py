"""The simulated WhatsApp Web server (trio + trio-websocket).

One :class:`Simulator` listens on ``ws://127.0.0.1:PORT/ws/chat`` and speaks enough of the protocol
for an unmodified whatsmeow (inside neonize, with its URL and root key patched) to pair, log in, stay
connected and send text messages. Tests drive the "phone" side through the control methods, and
the contacts' side (messages, receipts, typing, presence, calls to a paired device) through the
methods of :class:`~.contacts.ContactSide`; :class:`~.relay.DeviceRelay` forwards between devices.

Usage from a pytest-trio test::

    async with open_simulator(sim_port) as sim:  # the port compiled into the patched neonize
        ...  # start the client, then
        sim.scan_qr(qr, phone="15550001111")
        await sim.wait_connected("15550001111")
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hmac
import itertools
import logging
import math
import os
import secrets
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from hashlib import sha256

import trio
import trio_websocket

from . import codec, proto
from .accounts import Account, CompanionDevice, ReceivedMessage, UploadedKeys
from .burst import Burst
from .codec import JID, LID_SERVER, SERVER_JID, USER_SERVER, Node
from .connlog import ConnectionLog, Interval, Overlap
from .contacts import ContactSide
from .content import Content
from .delivery import DeliveryLog
from .errors import SimulatorError
from .media import MediaHost
from .noise import WA_HEADER, HandshakeError, ServerHandshake, ServerIdentity, Transport
from .paircode import CodePairing, PendingCode
from .relay import DeviceRelay, encrypted_copies
from .signal_rx import DecryptError, extract_text
from .signal_tx import SendingSession

log = logging.getLogger("wasim")

MAX_FRAME = (1 << 24) - 1
REFS_PER_PAIRING = 6
CLOSE_DELAY = 0.5  # how long the server waits after a stream:error before closing, as WhatsApp does


# ------------------------------------------------------------------ connections


@dataclass(frozen=True)
class IqError:
    """An IQ handler's answer that is an error (`<iq type="error"><error code text/></iq>`)."""

    code: int
    text: str


@dataclass
class _Close:
    """Outbox item: close the socket after ``delay`` seconds (abruptly: no WebSocket close frame)."""

    delay: float = 0.0
    abrupt: bool = False


@dataclass
class Connection:
    """One client websocket."""

    id: int
    remote: str
    accepted_at: float
    outbox: trio.MemorySendChannel[Node | _Close]
    outbox_rx: trio.MemoryReceiveChannel[Node | _Close]
    noise_pub: bytes = b""
    # "handshake" → "pairing" (registration) | "logged_in" → "active" (after passive) → "closed";
    # "replaced" from "logged_in"/"active" when the device logs in again (closed CLOSE_DELAY later)
    state: str = "handshake"
    phone: str | None = None
    device_id: int | None = None
    refs: list[str] = field(default_factory=list)
    registration: UploadedKeys | None = None
    # ids of IQs the server sent and what they were for
    pending_iqs: dict[str, str] = field(default_factory=dict)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    nodes_in: int = 0

    def send(self, node: Node) -> None:
        """Queue a node; the connection's writer task encrypts and sends it in order."""
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self.outbox.send_nowait(node)

    def close(self, delay: float = 0.0, abrupt: bool = False) -> None:
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self.outbox.send_nowait(_Close(delay, abrupt))

    @property
    def is_open(self) -> bool:
        return self.state != "closed"


@dataclass(frozen=True)
class PendingPairing:
    """A client waiting for its QR code to be scanned."""

    connection_id: int
    noise_key_b64: str
    refs: tuple[str, ...]


@dataclass(frozen=True)
class QrData:
    """The fields of the string whatsmeow turns into a QR code."""

    ref: str
    noise_pub: bytes
    identity_pub: bytes
    adv_secret: bytes

    @classmethod
    def parse(cls, qr: str) -> QrData:
        # neonize may hand over a wa.me link: "https://wa.me/settings/linked_devices#ref,noise,..."
        body = qr.split("#", 1)[1] if "#" in qr else qr
        parts = body.split(",")
        if len(parts) < 4:
            raise SimulatorError(f"not a WhatsApp pairing QR string: {qr!r}")
        return cls(
            parts[0], base64.b64decode(parts[1]), base64.b64decode(parts[2]), base64.b64decode(parts[3])
        )


# ------------------------------------------------------------------ the simulator


class Simulator(ContactSide, DeviceRelay, CodePairing):
    """A WhatsApp Web server for tests. All control methods must be called from the trio thread.

    Sync methods (``scan_qr``, ``stream_error``, ``drop`` ...) queue their frames and return at once;
    ``wait_*`` methods are async and take a timeout in seconds (``trio.TooSlowError`` on expiry).
    State (paired phones, their devices, contacts, received messages) lives as long as this object,
    so clients can be restarted against the same simulator.
    """

    def __init__(self, identity: ServerIdentity | None = None) -> None:
        self.identity = identity or ServerIdentity()
        self.port: int | None = None
        self.accounts: dict[str, Account] = {}
        self._accounts_by_lid: dict[str, Account] = {}
        self.connections: dict[int, Connection] = {}
        self._pairing_by_noise: dict[bytes, Connection] = {}
        self.messages: list[ReceivedMessage] = []
        self.deliveries = DeliveryLog()  # contact → device stanzas and their receipts
        self._sessions: dict[tuple[str, str, int], SendingSession] = {}
        self.lost_receipt_phones: set[str] = set()
        self.bursts: list[Burst] = []
        self._active_devices: dict[tuple[str, int], Connection] = {}
        self.connection_log = ConnectionLog()  # when each device was logged in, per connection
        self.accepted_connections = 0
        self.refused_connections = 0
        self.logins: Counter[str] = Counter()
        self.failed_logins: Counter[str] = Counter()
        self.history: list[tuple[float, str, dict[str, object]]] = []
        self.stalled_xmlns: set[str] = set()
        self.unacked_phones: set[str] = set()  # their messages are recorded but never acknowledged
        self._refusing = False
        self._fail_next_login: dict[str, str] = {}
        self._conn_ids = itertools.count(1)
        self._iq_ids = itertools.count(1)
        self._changed = trio.Event()
        self._handlers: trio.Nursery | None = None
        self._listen_scope: trio.CancelScope | None = None
        self._host = "127.0.0.1"
        self.media = MediaHost()  # started by serve(); announced by the media_conn IQ
        self._pair_codes: dict[int, PendingCode] = {}

    # -------------------------------------------------------------- serving

    async def serve(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled; ``await nursery.start(sim.serve, port)`` returns once listening.

        Connection handlers live in this task's own nursery, apart from the listener, so that the
        listener can be closed and reopened (:meth:`stop_listening`) while connections stay up.
        """
        async with trio.open_nursery() as handlers:
            self._handlers = handlers
            self._host = host
            await handlers.start(self.media.serve)
            self.port = await handlers.start(self._listen, port)
            log.info("simulator listening on %s:%s", host, self.port)
            task_status.started(self.port)
            # Keep the nursery open while the listener is closed and no connection is left.
            await trio.sleep_forever()

    async def _listen(
        self, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        assert self._handlers is not None
        listen = functools.partial(
            trio_websocket.serve_websocket,
            self._handle,
            self._host,
            port,
            None,
            handler_nursery=self._handlers,
            max_message_size=MAX_FRAME + 16,
            message_queue_size=64,
            connect_timeout=10,
            disconnect_timeout=2,
        )
        with trio.CancelScope() as scope:
            self._listen_scope = scope
            # The listener runs in this scope; accepted connections run in the handlers nursery.
            async with trio.open_nursery() as listener:
                server = await listener.start(listen)
                task_status.started(server.port)

    async def stop_listening(self) -> None:
        """Close the listening socket: new connections get "connection refused" (server unreachable).

        Existing connections stay up. Use :meth:`start_listening` to listen again on the same port.
        """
        if self._listen_scope is not None:
            self._listen_scope.cancel()
            self._listen_scope = None
            await trio.sleep(0.05)  # let the listener task close its socket
        self._record("listening", {"on": False})

    async def start_listening(self) -> None:
        """Reopen the listening socket closed by :meth:`stop_listening`."""
        if self._listen_scope is None and self._handlers is not None and self.port is not None:
            await self._handlers.start(self._listen, self.port)
        self._record("listening", {"on": True})

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        if self._refusing:
            self.refused_connections += 1
            self._record("refused", {})
            await request.reject(503)
            return
        ws = await request.accept()
        send, receive = trio.open_memory_channel[Node | _Close](math.inf)
        remote = str(getattr(ws.remote, "port", ws.remote))
        conn = Connection(next(self._conn_ids), remote, time.monotonic(), send, receive)
        self.connections[conn.id] = conn
        self.accepted_connections += 1
        self._record("accepted", {"conn": conn.id})
        try:
            with conn.cancel_scope:
                await self._run_connection(conn, ws)
        except* (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away: an ordinary end of a connection
        except* (HandshakeError, codec.CodecError, proto.ProtoError) as group:
            log.warning("conn %d: protocol error: %s", conn.id, group.exceptions)
        finally:
            self._on_closed(conn)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await ws.aclose()

    async def _run_connection(self, conn: Connection, ws: trio_websocket.WebSocketConnection) -> None:
        frames = _FrameReader()
        hello = await frames.next(ws, expect_header=True)
        handshake = ServerHandshake(self.identity)
        await ws.send_message(_frame(handshake.server_hello(hello)))
        result = handshake.finish(await frames.next(ws))
        conn.noise_pub = result.client_static
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, conn, ws, result.send)
            self._on_client_payload(conn, result.client_payload)
            while True:
                ciphertext = await frames.next(ws)
                try:
                    plaintext = result.receive.decrypt(ciphertext)
                except Exception:
                    log.warning("conn %d: undecryptable frame dropped", conn.id)
                    continue
                node = _decode_payload(plaintext)
                conn.nodes_in += 1
                log.debug("conn %d ← %s", conn.id, node)
                self._on_node(conn, node)

    async def _writer(
        self, conn: Connection, ws: trio_websocket.WebSocketConnection, cipher: Transport
    ) -> None:
        async for item in conn.outbox_rx:
            if isinstance(item, _Close):
                await trio.sleep(item.delay)
                if item.abrupt:
                    await _abort(ws)
                else:
                    with trio.move_on_after(1):
                        await ws.aclose()
                conn.cancel_scope.cancel()
                return
            log.debug("conn %d → %s", conn.id, item)
            await ws.send_message(_frame(cipher.encrypt(b"\x00" + codec.encode(item))))

    def _on_closed(self, conn: Connection) -> None:
        conn.state = "closed"
        conn.outbox.close()
        self.connections.pop(conn.id, None)
        self._device_closed(conn)
        self.connection_log.closed(conn.id, time.monotonic())
        if self._pairing_by_noise.get(conn.noise_pub) is conn:
            del self._pairing_by_noise[conn.noise_pub]
        self._pair_codes.pop(conn.id, None)
        self._record("closed", {"conn": conn.id, "phone": conn.phone})

    # -------------------------------------------------------------- login / registration

    def _on_client_payload(self, conn: Connection, payload: bytes) -> None:
        fields = proto.decode(payload)
        username = proto.first_int(fields, 1)
        if username is None:
            self._start_registration(conn, proto.first_bytes(fields, 19, b"") or b"")
        else:
            self._login(conn, str(username), proto.first_int(fields, 18, 0) or 0)

    def _start_registration(self, conn: Connection, pairing_data: bytes) -> None:
        data = proto.decode(pairing_data)
        spk_id = proto.first_bytes(data, 4, b"") or b""
        conn.registration = UploadedKeys(
            registration_id=int.from_bytes(proto.first_bytes(data, 1, b"") or b"", "big"),
            identity=proto.first_bytes(data, 3, b"") or b"",
            signed_prekey_id=int.from_bytes(spk_id, "big"),
            signed_prekey=proto.first_bytes(data, 5, b"") or b"",
            signed_prekey_signature=proto.first_bytes(data, 6, b"") or b"",
        )
        conn.state = "pairing"
        self._pairing_by_noise[conn.noise_pub] = conn
        self._record("registration", {"conn": conn.id})
        self._send_refs(conn)

    def _send_refs(self, conn: Connection) -> None:
        refs = [f"2@{secrets.token_urlsafe(48)}" for _ in range(REFS_PER_PAIRING)]
        conn.refs.extend(refs)
        iq_id = self._server_iq_id(conn, "pair-device")
        content = [Node("ref", {}, ref.encode()) for ref in refs]
        conn.send(
            Node(
                "iq",
                {"from": SERVER_JID, "type": "set", "id": iq_id, "xmlns": "md"},
                [Node("pair-device", {}, content)],
            )
        )

    def _login(self, conn: Connection, phone: str, device_id: int) -> None:
        conn.phone, conn.device_id = phone, device_id
        self.logins[phone] += 1
        account = self.accounts.get(phone)
        device = account.companions.get(device_id) if account else None
        reason = self._fail_next_login.pop(phone, None)
        if reason is None and (device is None or device.noise_pub != conn.noise_pub):
            reason = "401"  # unknown or removed device, as the real server answers
        if reason is not None or account is None:
            self.failed_logins[phone] += 1
            self._record(
                "login_failed", {"conn": conn.id, "phone": phone, "device": device_id, "reason": reason}
            )
            if reason in ("401", "403", "406") and account is not None:
                account.companions.pop(device_id, None)
            conn.send(Node("failure", {"reason": reason or "401", "location": "sim"}))
            conn.close(CLOSE_DELAY)
            return
        now = int(time.time())
        conn.state = "logged_in"
        self.connection_log.logged_in(conn.id, phone, device_id, time.monotonic())
        self._record("login", {"conn": conn.id, "phone": phone, "device": device_id})
        conn.send(
            Node(
                "success",
                {
                    "t": str(now),
                    "props": "1",
                    "abprops": "1",
                    "location": "sim",
                    "creation": str(now - 86400),
                    "lid": account.lid_jid.with_device(device_id),
                },
            )
        )
        self._replace_older(conn)

    def _replace_older(self, conn: Connection) -> None:
        """One live connection per device, as on WhatsApp: the device's other logged-in connections
        get ``<stream:error><conflict type="replaced"/></stream:error>`` (whatsmeow's
        ``handleStreamError`` matches only the conflict type, and emits ``StreamReplaced`` without
        reconnecting) and are closed ``CLOSE_DELAY`` later. They stop receiving deliveries at once."""
        older = [
            c
            for c in self.connections.values()
            if c is not conn
            and c.phone == conn.phone
            and c.device_id == conn.device_id
            and c.state in ("logged_in", "active")
        ]
        for old in older:
            old.state = "replaced"
            self._device_closed(old)
            old.send(Node("stream:error", {}, [Node("conflict", {"type": "replaced"})]))
            old.close(CLOSE_DELAY)
            self.connection_log.replaced(old.id, conn.id, time.monotonic())
            self._record(
                "replaced", {"conn": old.id, "by": conn.id, "phone": conn.phone, "device": conn.device_id}
            )

    # -------------------------------------------------------------- incoming nodes

    def _on_node(self, conn: Connection, node: Node) -> None:
        if node.tag == "iq":
            self._on_iq(conn, node)
        elif node.tag == "message":
            self._on_message(conn, node)
        elif node.tag == "receipt":
            self.on_device_receipt(conn, node)
            self.relay_receipt(conn, node)
            conn.send(
                Node("ack", {"class": "receipt", "id": node.attr("id"), "from": node.jid("to") or SERVER_JID})
            )
        elif node.tag == "chatstate":
            self._record_chatstate(conn, node)
            self.relay_chatstate(conn, node)
        # ib, presence, ack...: nothing to answer

    def _record_chatstate(self, conn: Connection, node: Node) -> None:
        """A device's typing state (``/typing``, a send queue's "composing"), for tests to wait on:
        ``device_chatstate {phone, device, to, state, media}``; ``to`` is the number when known."""
        target = node.jid("to")
        account = self._account_for(target) if target is not None else None
        state = node.children[0] if node.children else None
        details: dict[str, object] = {
            "conn": conn.id,
            "phone": conn.phone,
            "device": conn.device_id,
            "to": account.phone if account is not None else str(target),
            "state": state.tag if state is not None else None,
            "media": (state.attr("media") or None) if state is not None else None,
        }
        self._record("device_chatstate", details)

    def _on_iq(self, conn: Connection, node: Node) -> None:
        iq_type = node.attr("type")
        if iq_type in ("result", "error"):
            self._on_iq_response(conn, node)
            return
        xmlns = node.attr("xmlns")
        if xmlns in self.stalled_xmlns:
            self._record("stalled_iq", {"conn": conn.id, "xmlns": xmlns})
            return
        first = node.children[0].tag if node.children else ""
        handler = self._iq_handlers().get((xmlns, iq_type, first))
        content = handler(conn, node) if handler else None
        if isinstance(content, IqError):
            error = Node("error", {"code": str(content.code), "text": content.text})
            conn.send(
                Node(
                    "iq",
                    {"from": node.attr("to") or SERVER_JID, "type": "error", "id": node.attr("id")},
                    [error],
                )
            )
            return
        reply = Node("iq", {"from": SERVER_JID, "type": "result", "id": node.attr("id")}, content)
        conn.send(reply)
        if xmlns == "passive" and first == "active" and conn.state == "logged_in":
            conn.state = "active"
            self._record("active", {"conn": conn.id, "phone": conn.phone})
            self._device_active(conn)

    def _iq_handlers(
        self,
    ) -> dict[tuple[str, str, str], Callable[[Connection, Node], list[Node] | IqError | None]]:
        # Everything else gets an empty result: whatsmeow tolerates it, and an unanswered IQ stalls 75 s.
        return {
            ("encrypt", "get", "count"): self._prekey_count,
            ("encrypt", "set", "registration"): self._prekey_upload,
            ("encrypt", "get", "key"): self._prekey_bundles,
            ("usync", "get", "usync"): self._usync,
            ("privacy", "get", "privacy"): _privacy_settings,
            ("w:m", "set", "media_conn"): self._media_conn,
            ("md", "set", "link_code_companion_reg"): self._link_code_reg,
            # A group's info (whatsmeow asks before it sends to a group): the simulator has no groups,
            # and WhatsApp answers a group that does not exist with item-not-found.
            ("w:g2", "get", "query"): lambda conn, node: IqError(404, "item-not-found"),
        }

    def _media_conn(self, conn: Connection, node: Node) -> list[Node]:
        """Where to upload and download media: the simulator's HTTPS host (all four attributes are
        required by whatsmeow)."""
        attrs = {"auth": self.media.auth, "ttl": "3600", "auth_ttl": "3600", "max_buckets": "12"}
        return [Node("media_conn", attrs, [Node("host", {"hostname": self.media.hostname})])]

    def _on_iq_response(self, conn: Connection, node: Node) -> None:
        purpose = conn.pending_iqs.pop(node.attr("id"), None)
        if purpose != "pair-success":
            return
        if node.attr("type") == "result" and node.child("pair-device-sign") is not None:
            self._confirm_pairing(conn)
        else:
            self._record("pair_error", {"conn": conn.id, "phone": conn.phone})
            account = self.accounts.get(conn.phone or "")
            if account and conn.device_id is not None:
                account.companions.pop(conn.device_id, None)

    def _confirm_pairing(self, conn: Connection) -> None:
        account = self.accounts[conn.phone or ""]
        device = account.companions[conn.device_id or 0]
        device.confirmed = True
        self._record("paired", {"conn": conn.id, "phone": conn.phone, "device": device.device_id})
        # The client now restarts the stream and logs in with its new identity.
        conn.send(Node("stream:error", {"code": "515"}))
        conn.close(1.0)

    # -------------------------------------------------------------- prekeys

    def _own_device(self, conn: Connection) -> CompanionDevice | None:
        account = self.accounts.get(conn.phone or "")
        return account.companions.get(conn.device_id or 0) if account else None

    def _prekey_count(self, conn: Connection, node: Node) -> list[Node]:
        device = self._own_device(conn)
        count = len(device.keys.one_time_prekeys) if device else 0
        return [Node("count", {"value": str(count)})]

    def _prekey_upload(self, conn: Connection, node: Node) -> None:
        device = self._own_device(conn)
        if device is None:
            return None
        keys = device.keys
        registration = node.child("registration")
        identity = node.child("identity")
        if registration is not None:
            keys.registration_id = int.from_bytes(registration.data, "big")
        if identity is not None:
            keys.identity = identity.data
        key_list = node.child("list")
        for key in key_list.children_by_tag("key") if key_list else []:
            key_id, value = key.child("id"), key.child("value")
            if key_id is not None and value is not None:
                keys.one_time_prekeys[int.from_bytes(key_id.data, "big")] = value.data
        skey = node.child("skey")
        if skey is not None:
            parts = {child.tag: child.data for child in skey.children}
            keys.signed_prekey_id = int.from_bytes(parts.get("id", b""), "big")
            keys.signed_prekey = parts.get("value", b"")
            keys.signed_prekey_signature = parts.get("signature", b"")
        self._record("prekeys_uploaded", {"conn": conn.id, "count": len(keys.one_time_prekeys)})
        return None

    def _prekey_bundles(self, conn: Connection, node: Node) -> list[Node]:
        users: list[Node] = []
        key = node.child("key")
        for user in key.children_by_tag("user") if key else []:
            jid = user.jid("jid")
            account = self._account_for(jid) if jid else None
            if jid is None or account is None:
                continue
            users.append(Node("user", {"jid": jid}, self._bundle(account, jid.device)))
        return [Node("list", {}, users)]

    def _bundle(self, account: Account, device_id: int) -> list[Node]:
        if device_id == 0:
            primary = account.primary
            spk = primary.signed_prekey
            assert spk is not None
            opk_id, opk = primary.new_one_time_prekey()
            return _bundle_nodes(
                primary.registration_id,
                primary.identity.pub,
                (spk.key_id, spk.keys.pub, spk.signature),
                (opk_id, opk.pub),
            )
        device = account.companions.get(device_id)
        if device is None:
            return [Node("error", {"code": "404", "text": "item-not-found"})]
        keys = device.keys
        one_time = None
        if keys.one_time_prekeys:
            opk_id = next(iter(keys.one_time_prekeys))
            one_time = (opk_id, keys.one_time_prekeys.pop(opk_id))
        spk_triple = (keys.signed_prekey_id, keys.signed_prekey, keys.signed_prekey_signature)
        return _bundle_nodes(keys.registration_id, keys.identity, spk_triple, one_time)

    # -------------------------------------------------------------- usync

    def _usync(self, conn: Connection, node: Node) -> list[Node]:
        usync = node.child("usync")
        assert usync is not None
        query = usync.child("query")
        wanted = {child.tag for child in query.children} if query else set()
        user_list = usync.child("list")
        results = [
            self._usync_user(user, wanted)
            for user in (user_list.children_by_tag("user") if user_list else [])
        ]
        attrs = {k: v for k, v in usync.attrs.items() if k in ("sid", "mode", "context", "index", "last")}
        return [Node("usync", attrs, [Node("list", {}, [r for r in results if r is not None])])]

    def _usync_user(self, user: Node, wanted: set[str]) -> Node | None:
        jid = user.jid("jid")
        contact = user.child("contact")
        if jid is None and contact is not None:
            return self._usync_contact(contact, wanted)
        if jid is None:
            return None
        account = self._account_for(jid)
        if account is None:
            return Node("user", {"jid": jid})
        return Node("user", {"jid": jid}, self._usync_details(account, jid, wanted))

    def _usync_contact(self, contact: Node, wanted: set[str]) -> Node | None:
        """IsOnWhatsApp asks by number (``<contact>PHONE@c.us</contact>``, or ``+PHONE``). A known
        account answers with its LID as ``jid`` and the number as ``pn_jid``; any other number is
        ``type="out"`` (not on WhatsApp), and is not turned into a contact."""
        query = contact.data.decode()
        number = query.split("@", 1)[0].lstrip("+")
        if not number.isdigit():
            return None
        pn = JID(number, USER_SERVER)
        account = self.accounts.get(number)
        if account is None:
            return Node("user", {"pn_jid": pn}, [Node("contact", {"type": "out"}, query)])
        children = [Node("contact", {"type": "in"}, query), *self._usync_details(account, pn, wanted)]
        return Node("user", {"jid": account.lid_jid, "pn_jid": pn}, children)

    def _usync_details(self, account: Account, jid: JID, wanted: set[str]) -> list[Node]:
        children: list[Node] = []
        if "devices" in wanted:
            devices = [Node("device", {"id": str(d)}) for d in account.device_ids()]
            children.append(Node("devices", {}, [Node("device-list", {}, devices)]))
        if "lid" in wanted and jid.server == USER_SERVER:
            children.append(Node("lid", {"val": account.lid_jid}))
        return children

    # -------------------------------------------------------------- messages

    def _on_message(self, conn: Connection, node: Node) -> None:
        to = node.jid("to")
        msg_id = node.attr("id")
        if conn.phone in self.unacked_phones:
            self._record("unacked_message", {"conn": conn.id, "phone": conn.phone, "id": msg_id})
        else:
            conn.send(
                Node(
                    "ack",
                    {"class": "message", "id": msg_id, "from": to or SERVER_JID, "t": str(int(time.time()))},
                )
            )
        recipient = self._account_for(to) if to else None
        sender = self.accounts.get(conn.phone or "")
        record = ReceivedMessage(
            from_phone=conn.phone,
            from_device=conn.device_id,
            to=recipient.phone if recipient else str(to),
            to_jid=str(to),
            id=msg_id,
            text=None,
            type=node.attr("type", "text"),
            received_at=time.time(),
            child_tags=tuple(child.tag for child in node.children),
            attrs={key: str(value) for key, value in node.attrs.items()},
        )
        self.relay_message(conn, node, to, recipient)
        for target, enc in encrypted_copies(node, to):
            owner = self._account_for(target)
            if owner is None or target.device != 0:
                continue
            try:
                plaintext = self._decrypt_for_phone(conn, owner, enc)
                text = extract_text(plaintext)
            except (DecryptError, proto.ProtoError, ValueError) as exc:
                record.error = f"{target}: {exc}"
                log.warning("conn %d: cannot decrypt copy for %s: %s", conn.id, target, exc)
                continue
            if owner is recipient:
                record.text = text
                record.message = plaintext
            elif owner is sender:
                record.own_copy_text = text
        self.messages.append(record)
        self._record("message", record.as_dict(decoded=False))  # decoding waits for who asks

    def _decrypt_for_phone(self, conn: Connection, owner: Account, enc: Node) -> bytes:
        """A copy for a phone (device 0): a first message (pkmsg) against its prekeys, or an answer
        (msg) on the session its contact side opened by writing to this device."""
        if enc.attr("type") == "pkmsg":
            return owner.primary.decrypt_pkmsg(enc.data)
        session = self._sessions.get((owner.phone, conn.phone or "", conn.device_id or 0))
        if enc.attr("type") != "msg" or session is None:
            raise DecryptError(f"no session for a {enc.attr('type')!r} copy")
        return session.decrypt_reply(enc.data)

    # -------------------------------------------------------------- accounts

    def _account_for(self, jid: JID | None) -> Account | None:
        """The account behind a JID; an unknown phone number becomes a new simulated contact."""
        if jid is None:
            return None
        if jid.server == LID_SERVER:
            return self._accounts_by_lid.get(jid.user)
        if jid.server == USER_SERVER and jid.user.isdigit():
            return self.account(jid.user)
        return None

    def account(self, phone: str) -> Account:
        """The account for a phone number, created (as a contact with its own keys) on first use."""
        phone = phone.lstrip("+")
        account = self.accounts.get(phone)
        if account is None:
            account = Account.create(phone)
            self.accounts[phone] = account
            self._accounts_by_lid[account.lid] = account
        return account

    def _server_iq_id(self, conn: Connection, purpose: str) -> str:
        iq_id = f"sim-{next(self._iq_ids)}"
        conn.pending_iqs[iq_id] = purpose
        return iq_id

    def _record(self, kind: str, details: dict[str, object]) -> None:
        self.history.append((time.time(), kind, details))
        log.debug("%s %s", kind, details)
        self._changed.set()
        self._changed = trio.Event()

    # ============================================================== control API

    def pending_pairings(self) -> list[PendingPairing]:
        """Clients currently showing a QR code (registration connections not yet scanned)."""
        return [
            PendingPairing(c.id, base64.b64encode(c.noise_pub).decode(), tuple(c.refs))
            for c in self._pairing_by_noise.values()
            if c.is_open and c.phone is None
        ]

    def scan_qr(self, qr: str, phone: str) -> None:
        """Play the phone scanning a QR code: pair that client's device to ``phone``.

        ``qr`` is the string neonize passed to its QR callback (``ref,noise,identity,adv[,platform]``,
        possibly as a wa.me link). Sends ``pair-success``; after the client confirms, the server sends
        ``<stream:error code=515/>`` and the client reconnects and logs in on its own.
        Raises :class:`SimulatorError` if no open pairing connection has that noise key or the ref
        was never issued to it.
        """
        data = QrData.parse(qr)
        conn = self._pairing_by_noise.get(data.noise_pub)
        if conn is None or not conn.is_open:
            raise SimulatorError("no client waiting for pairing with this QR's noise key")
        if data.ref not in conn.refs:
            raise SimulatorError(f"QR ref {data.ref!r} was not issued to that client")
        if conn.phone is not None:
            raise SimulatorError("this QR code was already scanned")
        assert conn.registration is not None
        if conn.registration.identity != data.identity_pub:
            raise SimulatorError("QR identity key does not match the client's registration")
        self._send_pair_success(conn, self.account(phone), data.identity_pub, data.adv_secret, "scanned")

    def _send_pair_success(
        self, conn: Connection, account: Account, identity_pub: bytes, adv_secret: bytes, event: str
    ) -> None:
        """Pair the connection's client to ``account``: ``pair-success`` with the device identity
        signed by the account key and MACed with the ADV secret (from the QR, or derived from the
        pairing-code exchange). The client confirms, then gets a 515 and logs in."""
        assert conn.registration is not None
        device = account.add_companion(conn.noise_pub, conn.registration)
        conn.phone, conn.device_id = account.phone, device.device_id
        container = _signed_device_identity(account, identity_pub, adv_secret)
        iq_id = self._server_iq_id(conn, "pair-success")
        pair_success = Node(
            "pair-success",
            {},
            [
                Node("device-identity", {}, container),
                Node("platform", {"name": "android"}),
                Node(
                    "device",
                    {
                        "jid": account.pn_jid.with_device(device.device_id),
                        "lid": account.lid_jid.with_device(device.device_id),
                    },
                ),
            ],
        )
        conn.send(
            Node(
                "iq",
                {"from": SERVER_JID, "type": "set", "id": iq_id, "t": str(int(time.time()))},
                [pair_success],
            )
        )
        self._record(event, {"conn": conn.id, "phone": account.phone, "device": device.device_id})

    def rotate_qr(self, connection_id: int | None = None) -> int:
        """Send a fresh ``pair-device`` (six new refs) to one or all pairing clients; returns how many.

        whatsmeow then restarts its QR sequence with the new codes.
        """
        targets = [
            c for c in self._pairing_by_noise.values() if c.is_open and (connection_id in (None, c.id))
        ]
        for conn in targets:
            self._send_refs(conn)
        return len(targets)

    def phone_connections(self, phone: str) -> list[Connection]:
        """Open connections that logged in as this phone (any of its devices)."""
        phone = phone.lstrip("+")
        return [
            c for c in self.connections.values() if c.phone == phone and c.state in ("logged_in", "active")
        ]

    def connection_intervals(self, phone: str | None = None) -> list[Interval]:
        """Each logged-in connection (all phones, or one), from login to close, in login order."""
        return self.connection_log.intervals(phone.lstrip("+") if phone else None)

    def connection_overlaps(self, phone: str | None = None) -> list[Overlap]:
        """Times one device had two logged-in connections at once. A replacement makes one by design
        (``kick=True``, about ``CLOSE_DELAY`` long); any other is a device connected twice."""
        return self.connection_log.overlaps(time.monotonic(), phone.lstrip("+") if phone else None)

    def connected_phones(self) -> set[str]:
        """Phones with a connection that completed login and the post-login ``passive`` IQ."""
        return {c.phone for c in self.connections.values() if c.state == "active" and c.phone}

    def phone_state(self, phone: str) -> dict[str, object]:
        """A summary for assertions: connection states, login counts, paired devices."""
        phone = phone.lstrip("+")
        account = self.accounts.get(phone)
        return {
            "phone": phone,
            "lid": account.lid if account else None,
            "devices": sorted(d.device_id for d in account.companions.values()) if account else [],
            "connections": [c.state for c in self.connections.values() if c.phone == phone],
            "connected": phone in self.connected_phones(),
            "logins": self.logins[phone],
            "failed_logins": self.failed_logins[phone],
        }

    def stream_error(self, phone: str, code: int | None = None, conflict: str | None = None) -> int:
        """Send ``<stream:error code=...>`` (optionally with ``<conflict type=.../>``) to the phone's
        live connections and close them 0.5 s later; returns how many were hit.

        ``conflict="device_removed"`` also forgets the device, so its next login gets
        ``<failure reason=401/>``.
        """
        attrs = {"code": str(code)} if code is not None else {}
        content = [Node("conflict", {"type": conflict})] if conflict else None
        targets = self.phone_connections(phone)
        for conn in targets:
            conn.send(Node("stream:error", attrs, content))
            conn.close(CLOSE_DELAY)
            if conflict == "device_removed":
                account = self.accounts.get(conn.phone or "")
                if account and conn.device_id is not None:
                    account.companions.pop(conn.device_id, None)
        self._record(
            "stream_error", {"phone": phone, "code": code, "conflict": conflict, "hit": len(targets)}
        )
        return len(targets)

    def drop(self, phone: str) -> int:
        """Close the phone's live sockets abruptly (TCP close, no stream:error, no close frame)."""
        targets = self.phone_connections(phone)
        for conn in targets:
            conn.close(0, abrupt=True)
        self._record("drop", {"phone": phone, "hit": len(targets)})
        return len(targets)

    def forget_device(self, phone: str, device_id: int | None = None) -> None:
        """Unpair one (or every) companion device of a phone without touching live connections."""
        account = self.accounts.get(phone.lstrip("+"))
        if account is None:
            return
        for did in [device_id] if device_id is not None else list(account.companions):
            account.companions.pop(did, None)

    def refuse_connections(self, refuse: bool = True) -> None:
        """While on, new websocket upgrades are rejected with HTTP 503, so a client's dial fails at
        once; existing connections are untouched."""
        self._refusing = refuse
        self._record("refusing", {"on": refuse})

    def stall(self, xmlns: Iterable[str]) -> None:
        """Stop answering IQs in these namespaces (e.g. ``{"passive"}``, ``{"w:p"}``); replaces the set."""
        self.stalled_xmlns = set(xmlns)

    def stall_acks(self, phones: Iterable[str]) -> None:
        """Never acknowledge messages sent by these phones (their sends wait for an ack); replaces the set."""
        self.unacked_phones = set(phones)

    def fail_next_login(self, phone: str, reason: str = "401") -> None:
        """Answer the phone's next login with ``<failure reason=...>``. 401/403/406 also forget the
        device (the client deletes its store for those)."""
        self._fail_next_login[phone.lstrip("+")] = str(reason)

    def fetch_media(self, message: ReceivedMessage | Content) -> bytes:
        """The plaintext of a received media message's file, fetched from the media host and
        decrypted with the message's key, MAC and both hashes checked (``MediaError`` if not;
        ``KeyError`` if the host never stored that path)."""
        content = message.content if isinstance(message, ReceivedMessage) else message
        media = content.media if content is not None else None
        if content is None or media is None or media.media_key is None:
            raise SimulatorError("not a decoded media message with a media key")
        path = media.direct_path or media.url or ""
        return self.media.fetch(path, media.media_key, content.kind, media.file_sha256, media.file_enc_sha256)

    def messages_to(self, phone: str) -> list[ReceivedMessage]:
        return [m for m in self.messages if m.to == phone.lstrip("+")]

    def events(self, kind: str | None = None) -> list[dict[str, object]]:
        """The simulator's event log (accepted, registration, scanned, paired, login, active, ...)."""
        return [{"t": t, "kind": k, **d} for t, k, d in self.history if kind in (None, k)]

    # -------------------------------------------------------------- waiting

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> object:
        """Wait until ``predicate()`` is truthy (re-checked on every simulator event); return its value."""
        with trio.fail_after(timeout):
            while True:
                value = predicate()
                if value:
                    return value
                await self._changed.wait()

    async def wait_connected(self, phone: str, timeout: float = 15.0) -> None:
        """Until the phone has a logged-in connection that sent the post-login ``passive`` IQ."""
        await self.wait_for(lambda: phone.lstrip("+") in self.connected_phones(), timeout)

    async def wait_disconnected(self, phone: str, timeout: float = 15.0) -> None:
        await self.wait_for(lambda: not self.phone_connections(phone), timeout)

    async def wait_pairing(self, timeout: float = 15.0) -> PendingPairing:
        """Until a client is waiting to be paired; returns the first such client."""
        pairings = await self.wait_for(self.pending_pairings, timeout)
        assert isinstance(pairings, list)
        return pairings[0]

    async def wait_message(
        self,
        to: str | None = None,
        text: str | None = None,
        timeout: float = 15.0,
        *,
        id: str | None = None,
        kind: str | None = None,
        where: Callable[[Content], object] | None = None,
    ) -> ReceivedMessage:
        """Until a message arrived that matches every filter given: recipient phone, decrypted text,
        message id, decoded ``kind`` ("image", "reaction", ...) and ``where(content)`` on the decoded
        recipient copy (:class:`~.content.Content`; messages that did not decrypt never match it)."""

        def matches(message: ReceivedMessage) -> bool:
            if to is not None and message.to != to.lstrip("+"):
                return False
            if (text is not None and message.text != text) or (id is not None and message.id != id):
                return False
            if kind is None and where is None:
                return True
            content = message.content
            if content is None or (kind is not None and content.kind != kind):
                return False
            return where is None or bool(where(content))

        def find() -> ReceivedMessage | None:
            return next((m for m in self.messages if matches(m)), None)

        found = await self.wait_for(find, timeout)
        assert isinstance(found, ReceivedMessage)
        return found

    async def wait_event(
        self, kind: str, timeout: float = 15.0, after: int = 0, **match: object
    ) -> dict[str, object]:
        """Until an event of this kind (with matching fields) is logged; ``after`` skips earlier ones
        (pass ``len(sim.history)`` taken before the action)."""

        def find() -> dict[str, object] | None:
            for t, k, d in self.history[after:]:
                if k == kind and all(d.get(key) == value for key, value in match.items()):
                    return {"t": t, "kind": k, **d}
            return None

        found = await self.wait_for(find, timeout)
        assert isinstance(found, dict)
        return found


@asynccontextmanager
async def open_simulator(port: int = 0, host: str = "127.0.0.1") -> AsyncIterator[Simulator]:
    """Run a simulator for the duration of the block (``port=0`` picks a free port: ``sim.port``)."""
    sim = Simulator()
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve, port, host)
        try:
            yield sim
        finally:
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ helpers


class _FrameReader:
    """Splits the websocket byte stream into length-prefixed frames (3-byte big-endian length)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    async def next(self, ws: trio_websocket.WebSocketConnection, expect_header: bool = False) -> bytes:
        while True:
            if expect_header and len(self.buffer) >= 4:
                if bytes(self.buffer[:4]) != WA_HEADER:
                    raise HandshakeError(f"bad connection header {bytes(self.buffer[:4])!r}")
                del self.buffer[:4]
                expect_header = False
            if not expect_header and len(self.buffer) >= 3:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) >= 3 + length:
                    frame = bytes(self.buffer[3 : 3 + length])
                    del self.buffer[: 3 + length]
                    return frame
            message = await ws.get_message()
            self.buffer += message if isinstance(message, bytes) else message.encode()


def _frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError("frame too large")
    return len(payload).to_bytes(3, "big") + payload


def _decode_payload(plaintext: bytes) -> Node:
    flags, body = plaintext[0], plaintext[1:]
    if flags & 0x02:
        body = zlib.decompress(body)
    return codec.decode(body)


async def _abort(ws: trio_websocket.WebSocketConnection) -> None:
    """Close the TCP stream under the websocket without a close handshake (a network drop)."""
    close_stream = getattr(ws, "_close_stream", None)
    if close_stream is not None:
        await close_stream()
    else:  # pragma: no cover - trio-websocket internals changed; fall back to a clean close
        await ws.aclose()


def _privacy_settings(conn: Connection, node: Node) -> list[Node]:
    """Everything visible to everyone (MarkRead reads ``readreceipts`` to pick read vs read-self)."""
    names = ("readreceipts", "last", "online", "profile", "status", "groupadd", "calladd", "messages")
    return [Node("privacy", {}, [Node("category", {"name": name, "value": "all"}) for name in names])]


def _bundle_nodes(
    registration_id: int,
    identity: bytes,
    signed_prekey: tuple[int, bytes, bytes],
    one_time: tuple[int, bytes] | None,
) -> list[Node]:
    spk_id, spk_pub, spk_sig = signed_prekey
    nodes = [
        Node("registration", {}, registration_id.to_bytes(4, "big")),
        Node("type", {}, b"\x05"),
        Node("identity", {}, identity),
        Node(
            "skey",
            {},
            [
                Node("id", {}, spk_id.to_bytes(3, "big")),
                Node("value", {}, spk_pub),
                Node("signature", {}, spk_sig),
            ],
        ),
    ]
    if one_time is not None:
        opk_id, opk_pub = one_time
        nodes.append(Node("key", {}, [Node("id", {}, opk_id.to_bytes(3, "big")), Node("value", {}, opk_pub)]))
    return nodes


def _signed_device_identity(account: Account, identity_pub: bytes, adv_secret: bytes) -> bytes:
    """``ADVSignedDeviceIdentityHMAC`` for pair-success: the phone's account key vouches for the
    client's identity key, and the HMAC under the ADV secret proves the phone saw the QR (or that
    the code was typed)."""
    details = proto.encode(
        [(1, int.from_bytes(os.urandom(4), "big")), (2, int(time.time())), (3, 1)]
    )  # rawID, timestamp, keyIndex
    key = account.account_key
    signature = key.sign(b"\x06\x00" + details + identity_pub)
    signed = proto.encode([(1, details), (2, key.pub), (3, signature)])
    mac = hmac.new(adv_secret, signed, sha256).digest()
    return proto.encode([(1, signed), (2, mac)])
