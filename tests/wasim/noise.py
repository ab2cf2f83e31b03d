"""Server side of WhatsApp's Noise_XX_25519_AESGCM_SHA256 handshake, and the certificate chain.

whatsmeow accepts a server only if its static key is certified by an intermediate certificate that
is signed by WhatsApp's root key. The patched client trusts :data:`TEST_ROOT` instead, whose private
key is derived from a fixed seed so the same patched library can be reused between runs.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import proto
from .keys import KeyPair

NOISE_PATTERN = b"Noise_XX_25519_AESGCM_SHA256\0\0\0\0"
# "WA", magic 6, token dictionary version 3: the prologue every connection starts with.
WA_HEADER = b"WA\x06\x03"

TEST_ROOT = KeyPair.from_seed(b"waservice test root")

# WhatsApp's real root public key, as compiled into whatsmeow (socket.WACertPubKey).
WHATSAPP_ROOT_PUB = bytes.fromhex("142375574d0a587166aae71ebe516437c4a28b73e3695c6ce1f7f9545da8ee6b")

INTERMEDIATE_SERIAL = 0x1234
LEAF_SERIAL = 0x5678


class HandshakeError(Exception):
    """The client's handshake messages did not decrypt or parse."""


def hkdf(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _nonce(counter: int) -> bytes:
    return b"\0" * 8 + counter.to_bytes(4, "big")


def _cert(details: bytes, signer: KeyPair) -> bytes:
    return proto.encode([(1, details), (2, signer.sign(details))])


def _details(serial: int, issuer_serial: int, key: bytes) -> bytes:
    now = int(time.time())
    return proto.encode(
        [(1, serial), (2, issuer_serial), (3, key), (4, now - 86400), (5, now + 10 * 365 * 86400)]
    )


def make_cert_chain(server_static: KeyPair, root: KeyPair = TEST_ROOT) -> bytes:
    """``waCert.CertChain{leaf=1, intermediate=2}`` certifying the server's static key."""
    intermediate = KeyPair.generate()
    intermediate_cert = _cert(_details(INTERMEDIATE_SERIAL, 0, intermediate.pub), root)
    leaf_cert = _cert(_details(LEAF_SERIAL, INTERMEDIATE_SERIAL, server_static.pub), intermediate)
    return proto.encode([(1, leaf_cert), (2, intermediate_cert)])


@dataclass
class ServerIdentity:
    """The simulator's long-lived static key and the certificate chain served with it."""

    static: KeyPair = field(default_factory=KeyPair.generate)
    cert_chain: bytes = b""

    def __post_init__(self) -> None:
        if not self.cert_chain:
            self.cert_chain = make_cert_chain(self.static)


class HandshakeState:
    """The symmetric state (h, ck, k, n) of one Noise handshake."""

    def __init__(self) -> None:
        # The pattern name is exactly 32 bytes, so it is used raw (not hashed), also as the first key.
        self.h = NOISE_PATTERN
        self.ck = NOISE_PATTERN
        self.key = NOISE_PATTERN
        self.counter = 0

    def mix_hash(self, data: bytes) -> None:
        self.h = _sha256(self.h + data)

    def mix_key(self, dh_output: bytes) -> None:
        out = hkdf(dh_output, self.ck, b"", 64)
        self.ck, self.key = out[:32], out[32:]
        self.counter = 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = AESGCM(self.key).encrypt(_nonce(self.counter), plaintext, self.h)
        self.counter += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        try:
            plaintext = AESGCM(self.key).decrypt(_nonce(self.counter), ciphertext, self.h)
        except Exception as exc:  # InvalidTag carries no message
            raise HandshakeError("handshake message did not decrypt") from exc
        self.counter += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[Transport, Transport]:
        """(receive, send) ciphers for the server: the client sends with k1 and receives with k2."""
        out = hkdf(b"", self.ck, b"", 64)
        return Transport(out[:32]), Transport(out[32:])


class Transport:
    """One direction of the post-handshake channel: AES-GCM, counter nonce, no associated data."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.counter = 0

    def encrypt(self, plaintext: bytes) -> bytes:
        ciphertext = self._aead.encrypt(_nonce(self.counter), plaintext, None)
        self.counter += 1
        return ciphertext

    def decrypt(self, ciphertext: bytes) -> bytes:
        # The client advances its counter even for frames it drops, so we always advance too.
        counter = self.counter
        self.counter += 1
        return self._aead.decrypt(_nonce(counter), ciphertext, None)


@dataclass
class HandshakeResult:
    client_static: bytes  # the client's noise public key (second field of its QR code)
    client_payload: bytes  # serialized waWa6.ClientPayload
    receive: Transport
    send: Transport


class ServerHandshake:
    """Drives the server half of XX: call :meth:`server_hello`, then :meth:`finish`."""

    def __init__(self, identity: ServerIdentity) -> None:
        self.identity = identity
        self.state = HandshakeState()
        self.state.mix_hash(WA_HEADER)
        self.ephemeral = KeyPair.generate()

    def server_hello(self, client_hello: bytes) -> bytes:
        """Consume the ``HandshakeMessage{clientHello}`` bytes and return the serverHello message."""
        hello = proto.decode(client_hello)
        inner = proto.first_bytes(hello, 2)
        if inner is None:
            raise HandshakeError("expected clientHello")
        client_ephemeral = proto.first_bytes(proto.decode(inner), 1)
        if client_ephemeral is None or len(client_ephemeral) != 32:
            raise HandshakeError("clientHello without a 32-byte ephemeral key")
        self.client_ephemeral = client_ephemeral
        st = self.state
        st.mix_hash(client_ephemeral)
        st.mix_hash(self.ephemeral.pub)
        st.mix_key(self.ephemeral.dh(client_ephemeral))
        static_ct = st.encrypt_and_hash(self.identity.static.pub)
        st.mix_key(self.identity.static.dh(client_ephemeral))
        cert_ct = st.encrypt_and_hash(self.identity.cert_chain)
        server_hello = proto.encode([(1, self.ephemeral.pub), (2, static_ct), (3, cert_ct)])
        return proto.encode([(3, server_hello)])

    def finish(self, client_finish: bytes) -> HandshakeResult:
        """Consume ``HandshakeMessage{clientFinish}`` and derive the transport keys."""
        msg = proto.decode(client_finish)
        inner = proto.first_bytes(msg, 4)
        if inner is None:
            raise HandshakeError("expected clientFinish")
        fields = proto.decode(inner)
        static_ct = proto.first_bytes(fields, 1, b"")
        payload_ct = proto.first_bytes(fields, 2, b"")
        st = self.state
        # Nonce 1 here: nonce 0 of this key was used for the certificate chain.
        client_static = st.decrypt_and_hash(static_ct or b"")
        st.mix_key(self.ephemeral.dh(client_static))
        payload = st.decrypt_and_hash(payload_ct or b"")
        receive, send = st.split()
        return HandshakeResult(client_static, payload, receive, send)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
