"""Sending side of the Signal protocol: a simulated contact writes to a paired device (Alice's side).

The mirror of ``signal_rx.py``. The first message runs X3DH against the keys the device uploaded
(identity, signed prekey, one one-time prekey) and one DH ratchet step; every later message is one
step of the same sending chain (HMAC + HKDF + AES-CBC + HMAC). A Signal sender that has not yet heard
back keeps wrapping its messages in ``PreKeySignalMessage`` envelopes with the same base key and a
growing counter, and libsignal accepts each of them (the session with that base key already exists,
so the prekeys are not looked up again). The simulator never processes the device's replies, so the
session never needs to leave that state. It can still read the device's answers (``msg``
envelopes): the device ratchets once on Alice's key and then keeps one sending chain, which
:meth:`SendingSession.decrypt_reply` derives from the same root.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from hashlib import sha256

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import proto
from .keys import DJB_TYPE, KeyPair
from .noise import hkdf
from .signal_rx import MAC_LENGTH, SIGNAL_VERSION, SignalMessage, unpad


@dataclass(frozen=True)
class PreKeyBundle:
    """The public keys of the device being written to (what the server hands out for it)."""

    registration_id: int
    identity: bytes  # 32 bytes, no type prefix
    signed_prekey_id: int
    signed_prekey: bytes
    one_time_prekey: tuple[int, bytes] | None


def pad(plaintext: bytes) -> bytes:
    """whatsmeow's padding: 1-15 random bytes, each holding the pad length."""
    size = os.urandom(1)[0] & 0x0F or 0x0F
    return plaintext + bytes([size]) * size


def _typed(pub: bytes) -> bytes:
    return bytes([DJB_TYPE]) + pub[-32:]


class SendingSession:
    """One contact's Signal session towards one device: X3DH once, then one chain step per message."""

    def __init__(self, identity: KeyPair, registration_id: int, bundle: PreKeyBundle) -> None:
        self._identity = identity
        self._registration_id = registration_id
        self._bundle = bundle
        self._base = KeyPair.generate()
        self._ratchet = KeyPair.generate()
        secret = b"\xff" * 32
        secret += identity.dh(bundle.signed_prekey)
        secret += self._base.dh(bundle.identity)
        secret += self._base.dh(bundle.signed_prekey)
        if bundle.one_time_prekey is not None:
            secret += self._base.dh(bundle.one_time_prekey[1])
        root = hkdf(secret, None, b"WhisperText", 64)[:32]
        # Alice's first sending chain: one DH ratchet step against Bob's signed prekey.
        step = hkdf(self._ratchet.dh(bundle.signed_prekey), root, b"WhisperRatchet", 64)
        self._root, self._chain = step[:32], step[32:]
        self.counter = 0
        # The MAC covers both identities, the sender's first.
        self._mac_prefix = identity.signal_pub + _typed(bundle.identity)
        self._reply_chains: dict[bytes, tuple[int, bytes]] = {}  # their ratchet key → (index, chain)

    def encrypt(self, plaintext: bytes) -> bytes:
        """The ``pkmsg`` envelope carrying ``plaintext`` (padded here); advances the chain."""
        seed = hmac.new(self._chain, b"\x01", sha256).digest()
        self._chain = hmac.new(self._chain, b"\x02", sha256).digest()
        keys = hkdf(seed, None, b"WhisperMessageKeys", 80)
        cipher_key, mac_key, iv = keys[:32], keys[32:64], keys[64:]
        padded = pad(plaintext)
        block = 16 - len(padded) % 16
        encryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(padded + bytes([block]) * block) + encryptor.finalize()
        body = bytes([SIGNAL_VERSION]) + proto.encode(
            [(1, self._ratchet.signal_pub), (2, self.counter), (3, 0), (4, ciphertext)]
        )
        mac = hmac.new(mac_key, self._mac_prefix + body, sha256).digest()[:MAC_LENGTH]
        self.counter += 1
        bundle = self._bundle
        return bytes([SIGNAL_VERSION]) + proto.encode(
            [
                (5, self._registration_id),
                (1, bundle.one_time_prekey[0] if bundle.one_time_prekey else None),
                (6, bundle.signed_prekey_id),
                (2, self._base.signal_pub),
                (3, self._identity.signal_pub),
                (4, body + mac),
            ]
        )

    def decrypt_reply(self, envelope: bytes) -> bytes:
        """Decrypt a ``msg`` (SignalMessage) the device sent back on this session; unpadded."""
        message = SignalMessage.parse(envelope)
        their_ratchet, counter = message.ratchet_key, message.counter
        index, chain = self._reply_chains.get(their_ratchet, (0, b""))
        if not chain or counter < index:  # a new ratchet key, or an older message: from the start
            step = hkdf(self._ratchet.dh(their_ratchet), self._root, b"WhisperRatchet", 64)
            index, chain = 0, step[32:]
        for _ in range(counter - index):
            chain = hmac.new(chain, b"\x02", sha256).digest()
        self._reply_chains[their_ratchet] = (counter, chain)
        return unpad(message.open(chain, _typed(self._bundle.identity), self._identity.signal_pub))
