"""Receiving side of the Signal protocol, just enough to read the first messages a client sends.

A simulated device hands out a prekey bundle (identity, signed prekey, one-time prekeys). The client
answers with ``pkmsg`` envelopes: X3DH from the bundle, then one ratchet step. Because the simulator
never replies, the client keeps sending ``pkmsg`` with the same base key and a growing counter, so
each envelope can be decrypted from scratch without keeping session state.
"""

from __future__ import annotations

import hmac
import os
import struct
from dataclasses import dataclass, field
from hashlib import sha256

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import proto
from .keys import KeyPair
from .noise import hkdf

# Signal protocol version 3 in both nibbles: (current << 4) | current.
SIGNAL_VERSION = 0x33
MAC_LENGTH = 8


class DecryptError(Exception):
    """A Signal envelope this device cannot decrypt."""


@dataclass
class SignedPreKey:
    key_id: int
    keys: KeyPair
    signature: bytes


@dataclass
class SignalDevice:
    """The Signal keys of one simulated device (a contact's phone, or a paired phone's primary)."""

    identity: KeyPair
    registration_id: int = field(default_factory=lambda: struct.unpack(">H", os.urandom(2))[0] & 0x3FFF | 1)
    signed_prekey: SignedPreKey | None = None
    one_time_prekeys: dict[int, KeyPair] = field(default_factory=dict)
    _next_prekey_id: int = 1

    def __post_init__(self) -> None:
        if self.signed_prekey is None:
            spk = KeyPair.generate()
            # libsignal signs the type-prefixed public key.
            self.signed_prekey = SignedPreKey(1, spk, self.identity.sign(spk.signal_pub))

    def new_one_time_prekey(self) -> tuple[int, KeyPair]:
        """A fresh one-time prekey, kept so a later pkmsg using it can be decrypted."""
        key_id = self._next_prekey_id
        self._next_prekey_id += 1
        keys = KeyPair.generate()
        self.one_time_prekeys[key_id] = keys
        return key_id, keys

    def decrypt_pkmsg(self, envelope: bytes) -> bytes:
        """Decrypt a ``PreKeySignalMessage`` addressed to this device and return the unpadded plaintext."""
        if not envelope or envelope[0] != SIGNAL_VERSION:
            raise DecryptError("unsupported pkmsg version")
        fields = proto.decode(envelope[1:])
        prekey_id = proto.first_int(fields, 1)
        base_key = proto.first_bytes(fields, 2)
        their_identity = proto.first_bytes(fields, 3)
        inner = proto.first_bytes(fields, 4)
        if base_key is None or their_identity is None or inner is None:
            raise DecryptError("pkmsg is missing a field")
        root, _ = self._x3dh(their_identity, base_key, prekey_id)
        plaintext = self._decrypt_signal_message(inner, root, their_identity)
        return unpad(plaintext)

    def _x3dh(self, their_identity: bytes, base_key: bytes, prekey_id: int | None) -> tuple[bytes, bytes]:
        assert self.signed_prekey is not None
        spk = self.signed_prekey.keys
        secret = b"\xff" * 32
        secret += spk.dh(their_identity)
        secret += self.identity.dh(base_key)
        secret += spk.dh(base_key)
        if prekey_id is not None:
            opk = self.one_time_prekeys.get(prekey_id)
            if opk is None:
                raise DecryptError(f"unknown one-time prekey {prekey_id}")
            secret += opk.dh(base_key)
        derived = hkdf(secret, None, b"WhisperText", 64)
        return derived[:32], derived[32:]

    def _decrypt_signal_message(self, data: bytes, root: bytes, their_identity: bytes) -> bytes:
        message = SignalMessage.parse(data)
        assert self.signed_prekey is not None
        # Bob's first ratchet key is his signed prekey; one DH ratchet step gives the receiving chain.
        step = hkdf(self.signed_prekey.keys.dh(message.ratchet_key), root, b"WhisperRatchet", 64)
        chain = step[32:]
        for _ in range(message.counter):
            chain = hmac.new(chain, b"\x02", sha256).digest()
        return message.open(chain, their_identity, self.identity.signal_pub)


@dataclass(frozen=True)
class SignalMessage:
    """A SignalMessage (the body of a ``msg``, or inside a ``pkmsg``), parsed but not yet opened."""

    ratchet_key: bytes
    counter: int
    ciphertext: bytes
    body: bytes  # what the MAC covers (version byte and protobuf)
    mac: bytes

    @classmethod
    def parse(cls, data: bytes) -> SignalMessage:
        if len(data) < 1 + MAC_LENGTH or data[0] != SIGNAL_VERSION:
            raise DecryptError("bad signal message")
        body, mac = data[:-MAC_LENGTH], data[-MAC_LENGTH:]
        fields = proto.decode(body[1:])
        ratchet_key = proto.first_bytes(fields, 1)
        ciphertext = proto.first_bytes(fields, 4)
        if ratchet_key is None or ciphertext is None:
            raise DecryptError("signal message is missing a field")
        return cls(ratchet_key, proto.first_int(fields, 2, 0) or 0, ciphertext, body, mac)

    def open(self, chain: bytes, sender_identity: bytes, receiver_identity: bytes) -> bytes:
        """Decrypt with `chain`, the chain key at this message's counter; PKCS#7 stripped."""
        seed = hmac.new(chain, b"\x01", sha256).digest()
        keys = hkdf(seed, None, b"WhisperMessageKeys", 80)
        cipher_key, mac_key, iv = keys[:32], keys[32:64], keys[64:]
        expected = hmac.new(mac_key, sender_identity + receiver_identity + self.body, sha256).digest()
        if not hmac.compare_digest(expected[:MAC_LENGTH], self.mac):
            raise DecryptError("MAC mismatch")
        decryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).decryptor()
        return strip_pkcs7(decryptor.update(self.ciphertext) + decryptor.finalize())


def strip_pkcs7(data: bytes) -> bytes:
    if not data or not 1 <= data[-1] <= 16:
        raise DecryptError("bad PKCS#7 padding")
    return data[: -data[-1]]


def unpad(data: bytes) -> bytes:
    """Remove whatsmeow's random 1-15 byte padding (each pad byte holds the pad length)."""
    if not data:
        raise DecryptError("empty plaintext")
    pad = data[-1]
    if pad == 0 or pad > len(data) or data[-pad:] != bytes([pad]) * pad:
        raise DecryptError("bad message padding")
    return data[:-pad]


def extract_text(message: bytes) -> str | None:
    """The text of a serialized ``waE2E.Message``: conversation, extendedTextMessage.text, or the
    message inside a deviceSentMessage (the copy a client sends to its own phone)."""
    fields = proto.decode(message)
    conversation = proto.first_bytes(fields, 1)
    if conversation is not None:
        return conversation.decode()
    extended = proto.first_bytes(fields, 6)
    if extended is not None:
        text = proto.first_bytes(proto.decode(extended), 1)
        if text is not None:
            return text.decode()
    device_sent = proto.first_bytes(fields, 31)
    if device_sent is not None:
        inner = proto.first_bytes(proto.decode(device_sent), 2)
        if inner is not None:
            return extract_text(inner)
    return None
