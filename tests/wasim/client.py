"""A minimal WhatsApp Web *client* in Python, for testing the simulator itself without neonize.

It performs the client half of the Noise handshake and exchanges binary nodes; it knows nothing of
Signal sessions. Tests use it to check the simulator's protocol handling quickly and to open many
connections cheaply.
"""

from __future__ import annotations

import base64
import itertools
import os
from dataclasses import dataclass, field

import trio
import trio_websocket
import xeddsa

from . import codec, proto
from .codec import SERVER_JID, Node
from .keys import KeyPair
from .noise import TEST_ROOT, WA_HEADER, HandshakeError, HandshakeState, Transport, hkdf


@dataclass
class DeviceKeys:
    """What a companion device keeps between connections."""

    noise: KeyPair = field(default_factory=KeyPair.generate)
    identity: KeyPair = field(default_factory=KeyPair.generate)
    adv_secret: bytes = field(default_factory=lambda: os.urandom(32))
    registration_id: int = 1234
    phone: str | None = None
    device_id: int | None = None


def registration_payload(keys: DeviceKeys) -> bytes:
    """``ClientPayload`` for a device that wants a QR code (no username)."""
    spk = KeyPair.generate()
    pairing = proto.encode(
        [
            (1, keys.registration_id.to_bytes(4, "big")),
            (2, b"\x05"),
            (3, keys.identity.pub),
            (4, (1).to_bytes(3, "big")),
            (5, spk.pub),
            (6, keys.identity.sign(spk.signal_pub)),
        ]
    )
    return proto.encode([(3, False), (19, pairing)])


def login_payload(keys: DeviceKeys) -> bytes:
    """``ClientPayload`` for a paired device (username = phone number, device id)."""
    assert keys.phone is not None and keys.device_id is not None
    return proto.encode([(1, int(keys.phone)), (3, True), (18, keys.device_id)])


class WireClient:
    """One websocket connection speaking the WhatsApp Web framing and Noise transport."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, send: Transport, receive: Transport) -> None:
        self.ws = ws
        self._send = send
        self._receive = receive
        self._buffer = bytearray()
        self._ids = itertools.count(1)

    @classmethod
    async def connect(
        cls,
        nursery: trio.Nursery,
        url: str,
        keys: DeviceKeys,
        payload: bytes,
        root_pub: bytes = TEST_ROOT.pub,
    ) -> WireClient:
        """Open the socket and run the client side of Noise XX; ``payload`` is the ClientPayload."""
        ws = await trio_websocket.connect_websocket_url(nursery, url, max_message_size=1 << 24)
        state = HandshakeState()
        state.mix_hash(WA_HEADER)
        ephemeral = KeyPair.generate()
        state.mix_hash(ephemeral.pub)
        hello = proto.encode([(2, proto.encode([(1, ephemeral.pub)]))])
        await ws.send_message(WA_HEADER + _frame(hello))
        client = cls(ws, Transport(b"\0" * 32), Transport(b"\0" * 32))
        server_hello = proto.decode(proto.first_bytes(proto.decode(await client._next_frame()), 3) or b"")
        server_ephemeral = proto.first_bytes(server_hello, 1) or b""
        state.mix_hash(server_ephemeral)
        state.mix_key(ephemeral.dh(server_ephemeral))
        server_static = state.decrypt_and_hash(proto.first_bytes(server_hello, 2) or b"")
        state.mix_key(ephemeral.dh(server_static))
        certificate = state.decrypt_and_hash(proto.first_bytes(server_hello, 3) or b"")
        _check_certificate(certificate, server_static, root_pub)
        static_ct = state.encrypt_and_hash(keys.noise.pub)
        state.mix_key(keys.noise.dh(server_ephemeral))
        payload_ct = state.encrypt_and_hash(payload)
        await ws.send_message(_frame(proto.encode([(4, proto.encode([(1, static_ct), (2, payload_ct)]))])))
        # The client sends with the first key and receives with the second.
        keys_out = hkdf(b"", state.ck, b"", 64)
        client._send, client._receive = Transport(keys_out[:32]), Transport(keys_out[32:])
        return client

    async def _next_frame(self) -> bytes:
        while True:
            if len(self._buffer) >= 3:
                length = int.from_bytes(self._buffer[:3], "big")
                if len(self._buffer) >= 3 + length:
                    frame = bytes(self._buffer[3 : 3 + length])
                    del self._buffer[: 3 + length]
                    return frame
            self._buffer += await self.ws.get_message()

    async def send(self, node: Node) -> None:
        await self.ws.send_message(_frame(self._send.encrypt(b"\x00" + codec.encode(node))))

    async def receive(self) -> Node:
        plaintext = self._receive.decrypt(await self._next_frame())
        return codec.decode(plaintext[1:])

    async def iq(self, xmlns: str, iq_type: str, content: list[Node] | None = None) -> Node:
        """Send an IQ to the server and return its reply (other nodes received meanwhile are dropped)."""
        iq_id = f"wc-{next(self._ids)}"
        await self.send(Node("iq", {"id": iq_id, "to": SERVER_JID, "type": iq_type, "xmlns": xmlns}, content))
        while True:
            node = await self.receive()
            if node.tag == "iq" and node.attr("id") == iq_id:
                return node

    async def aclose(self) -> None:
        await self.ws.aclose()


def qr_string(ref: str, keys: DeviceKeys) -> str:
    """The string whatsmeow would show as a QR code for this ref."""
    parts = [
        ref,
        *(base64.b64encode(k).decode() for k in (keys.noise.pub, keys.identity.pub, keys.adv_secret)),
    ]
    return ",".join(parts)


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + payload


def _check_certificate(chain: bytes, server_static: bytes, root_pub: bytes) -> None:
    fields = proto.decode(chain)
    leaf = proto.decode(proto.first_bytes(fields, 1) or b"")
    intermediate = proto.decode(proto.first_bytes(fields, 2) or b"")
    inter_details = proto.first_bytes(intermediate, 1) or b""
    leaf_details = proto.first_bytes(leaf, 1) or b""
    if not verify(root_pub, inter_details, proto.first_bytes(intermediate, 2) or b""):
        raise HandshakeError("intermediate certificate not signed by the root")
    inter_key = proto.first_bytes(proto.decode(inter_details), 3) or b""
    if not verify(inter_key, leaf_details, proto.first_bytes(leaf, 2) or b""):
        raise HandshakeError("leaf certificate not signed by the intermediate")
    if proto.first_bytes(proto.decode(leaf_details), 3) != server_static:
        raise HandshakeError("leaf certificate key is not the server's static key")


def verify(curve_pub: bytes, message: bytes, signature: bytes) -> bool:
    """Check an XEdDSA signature the way libsignal does (sign bit carried in the signature)."""
    if len(signature) != 64:
        return False
    sign_bit = bool(signature[63] & 0x80)
    clean = signature[:63] + bytes([signature[63] & 0x7F])
    ed_pub = xeddsa.curve25519_pub_to_ed25519_pub(curve_pub, sign_bit)
    return bool(xeddsa.ed25519_verify(clean, ed_pub, message))
