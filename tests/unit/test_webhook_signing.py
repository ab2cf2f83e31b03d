"""Signatures by the Standard Webhooks specification, checked against its published vector and its
own Python library (what receivers will verify with)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from standardwebhooks import Webhook

from waservice.webhooks import signing

# The specification's example (standard-webhooks spec and every reference library's tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_published_vector():
    key = signing.secret_key(VECTOR_SECRET)
    assert signing.signature(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_reference_library_verifies_our_headers():
    secret = signing.new_secret()
    body = b'{"id":7,"type":"session.qr","session_id":"s","timestamp":"t","data":{"qr":"x"}}'
    now = int(dt.datetime.now(dt.UTC).timestamp())
    headers = signing.headers(signing.secret_key(secret), 7, now, body)
    assert headers["webhook-id"] == "7"
    assert Webhook(secret).verify(body, headers)["data"] == {"qr": "x"}
    assert (
        Webhook(secret).sign("7", dt.datetime.fromtimestamp(now, dt.UTC), body.decode())
        == (headers["webhook-signature"])
    )


def test_generated_secrets_are_fresh_and_long_enough():
    a, b = signing.new_secret(), signing.new_secret()
    assert a != b and a.startswith("whsec_")
    assert 24 <= len(base64.b64decode(a.removeprefix("whsec_"))) <= 64


@pytest.mark.parametrize(
    "bad",
    ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_" + base64.b64encode(b"x" * 8).decode()],
)
def test_bad_secrets_are_refused_without_being_quoted(bad: str):
    with pytest.raises(signing.InvalidSecret) as caught:
        signing.secret_key(bad)
    assert bad.removeprefix("whsec_") not in str(caught.value)
