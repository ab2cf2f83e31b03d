"""Standard Webhooks signatures (https://www.standardwebhooks.com/), pure.

A secret is `whsec_` + base64 of random bytes; the HMAC key is those bytes. Each attempt is signed
anew (its timestamp is the attempt's), the webhook-id stays the event id, so receivers de-duplicate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
KEY_BYTES = 32  # the spec asks for 24-64 bytes


class InvalidSecret(ValueError):
    """Not `whsec_` + base64 of 24 to 64 bytes."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret; raises InvalidSecret (never quoting the secret)."""
    if not secret.startswith(PREFIX):
        raise InvalidSecret("secret must start with 'whsec_' followed by base64")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("secret must be 'whsec_' followed by valid base64") from None
    if not 24 <= len(key) <= 64:
        raise InvalidSecret(f"secret must hold 24 to 64 bytes of key, not {len(key)}")
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    signed = b"%s.%d.%s" % (webhook_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, event_id: int, timestamp: int, body: bytes) -> dict[str, str]:
    webhook_id = str(event_id)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, webhook_id, timestamp, body),
    }
