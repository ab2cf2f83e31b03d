"""Curve25519 key pairs, Diffie-Hellman and XEdDSA signatures as WhatsApp (libsignal) uses them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import xeddsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

# libsignal's "DJB" key type byte, prefixed to public keys inside Signal protobufs and signatures.
DJB_TYPE = 0x05


def clamp(raw: bytes) -> bytes:
    key = bytearray(raw)
    key[0] &= 248
    key[31] &= 127
    key[31] |= 64
    return bytes(key)


@dataclass(frozen=True)
class KeyPair:
    """A clamped Curve25519 private key and its public key (32 bytes each)."""

    priv: bytes
    pub: bytes

    @classmethod
    def from_private(cls, priv: bytes) -> KeyPair:
        priv = clamp(priv)
        pub = X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes_raw()
        return cls(priv, pub)

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_private(os.urandom(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """A deterministic key pair (used for the test root so a patched library can be cached)."""
        return cls.from_private(hashlib.sha256(seed).digest())

    def dh(self, their_pub: bytes) -> bytes:
        return X25519PrivateKey.from_private_bytes(self.priv).exchange(
            X25519PublicKey.from_public_bytes(strip_type(their_pub))
        )

    def sign(self, message: bytes) -> bytes:
        """XEdDSA signature, verifiable with the Curve25519 public key.

        The private key is forced to an even-sign Edwards key first: Go's libsignal derives the
        Edwards public key with the sign bit cleared, so an unforced key fails half the time.
        """
        return xeddsa.ed25519_priv_sign(xeddsa.priv_force_sign(self.priv, False), message)

    @property
    def signal_pub(self) -> bytes:
        """The public key with libsignal's type prefix (33 bytes)."""
        return bytes([DJB_TYPE]) + self.pub


def strip_type(pub: bytes) -> bytes:
    """Accept a public key with or without the 0x05 type prefix."""
    if len(pub) == 33 and pub[0] == DJB_TYPE:
        return pub[1:]
    if len(pub) != 32:
        raise ValueError(f"bad Curve25519 public key length {len(pub)}")
    return pub
