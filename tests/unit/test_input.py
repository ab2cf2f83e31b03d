"""Strict input: every careless or hostile body is a clear 400 naming what is wrong, never a 500 and
never a silent default (issue 12, part 2)."""

from __future__ import annotations

import json

import pytest

from tests.unit.calls import call, wait_state

VALID = "12025550143"  # a fictional number libphonenumber accepts (202-555-01xx)


async def post_raw(client, path: str, raw: bytes):
    return await call(client, "post", path, data=raw, headers={"Content-Type": "application/json"})


@pytest.fixture
async def connected(client, engine):
    """`s1` and `default` connected, so that a body that passes validation would really be sent."""
    for session_id, phone in (("s1", "573001234567"), ("default", "573007654321")):
        await call(client, "post", "/connect", json={"session_id": session_id})
        await wait_state(client, session_id, "qr_ready")
        engine.clients[session_id].scan(phone)
        await wait_state(client, session_id, "connected")
    return engine.clients["s1"]


def all_sent(engine) -> list:
    return [m for c in engine.clients.values() for m in c.sent]


# ---------------------------------------------------------------------------- unknown fields --


@pytest.mark.parametrize("key", ["sesion_id", "sessionId", "session"])
async def test_misspelled_session_id_is_refused_not_sent_from_default(client, engine, connected, key):
    body = {key: "s1", "number": VALID, "message": "hi"}
    status, answer = await call(client, "post", "/send", json=body)
    assert status == 400, answer
    assert f"unknown field '{key}'" in answer["error"]
    assert all_sent(engine) == []


async def test_unknown_field_hint_names_the_field_meant(client):
    status, answer = await call(client, "post", "/send", json={"sesion_id": "s1", "number": VALID})
    assert status == 400 and "did you mean 'session_id'?" in answer["error"], answer


async def test_misspelled_key_does_not_disconnect_default(client, connected):
    status, answer = await call(client, "post", "/disconnect", json={"sessionId": "s1"})
    assert status == 400 and "'sessionId'" in answer["error"], answer
    assert (await call(client, "get", "/status?session_id=s1"))[1]["state"] == "connected"


@pytest.mark.parametrize("path", ["/connect", "/disconnect", "/reset-reconnect", "/send"])
async def test_session_id_in_the_query_of_a_post_is_refused(client, engine, connected, path):
    body = {"number": VALID, "message": "hi"} if path == "/send" else {}
    status, answer = await call(client, "post", f"{path}?session_id=s1", json=body)
    assert status == 400, answer
    assert "query parameter 'session_id'" in answer["error"]
    assert all_sent(engine) == []
    assert (await call(client, "get", "/status?session_id=s1"))[1]["state"] == "connected"


# ---------------------------------------------------------------------------------- numbers --


@pytest.mark.parametrize(
    ("number", "country"),
    [("2025550143", "20 (EG)"), ("6505550123", "65 (SG)"), ("9175550123", "91 (IN)")],
)
async def test_us_numbers_without_their_1_are_not_sent_abroad(client, engine, connected, number, country):
    status, answer = await call(client, "post", "/send", json={"number": number, "message": "hi"})
    assert status == 400, answer
    assert f"{number} is not a valid number for country code {country}" in answer["error"]
    assert "missing country code?" in answer["error"] and f"1{number}" in answer["error"]
    assert all_sent(engine) == []


@pytest.mark.parametrize("number", ["15550001111", "1555123", "44791112345"])
async def test_invalid_numbers_say_why(client, number):
    status, answer = await call(client, "post", "/send", json={"number": number, "message": "hi"})
    assert status == 400 and answer["error"].startswith("invalid number: "), answer


async def test_valid_number_with_formatting_is_sent(client, connected):
    status, answer = await call(
        client, "post", "/send", json={"session_id": "s1", "number": "+1 (202) 555-0143", "message": "hi"}
    )
    assert status == 200, answer
    assert connected.sent[-1].to == VALID


# ---------------------------------------------------------------------------------- nesting --


@pytest.mark.parametrize("depth", [981, 5_000, 100_000])
@pytest.mark.parametrize(
    "shape",
    ["top", "known field", "unknown field", "object"],
)
async def test_deeply_nested_json_is_a_400(client, depth, shape):
    nested = "[" * depth + "]" * depth
    raw = {
        "top": nested,
        "known field": f'{{"session_id": {nested}}}',
        "unknown field": f'{{"x": {nested}}}',
        "object": '{"a":' * depth + "1" + "}" * depth,
    }[shape]
    for path in ("/connect", "/send", "/_fake/scan"):
        status, answer = await post_raw(client, path, raw.encode())
        assert status == 400 and answer["success"] is False, (path, status, answer)


# ------------------------------------------------------------------------------------ unicode --


@pytest.mark.parametrize("escaped", [r"\ud800", r"\udfff", r"x\ud83dy", r"\ude00\ud83d", r"\ud800\u0041"])
async def test_lone_surrogates_are_refused(client, engine, connected, escaped):
    raw = f'{{"session_id": "s1", "number": "{VALID}", "message": "{escaped}"}}'.encode()
    status, answer = await post_raw(client, "/send", raw)
    assert status == 400 and "lone surrogate" in answer["error"], answer
    assert all_sent(engine) == []


async def test_a_surrogate_pair_is_an_emoji(client, connected):
    raw = f'{{"session_id": "s1", "number": "{VALID}", "message": "\\ud83d\\ude00"}}'.encode()
    status, answer = await post_raw(client, "/send", raw)
    assert status == 200, answer
    assert connected.sent[-1].text == "\U0001f600"


async def test_escaped_backslash_before_u_is_not_a_surrogate(client, connected):
    raw = f'{{"session_id": "s1", "number": "{VALID}", "message": "\\\\ud800"}}'.encode()
    status, answer = await post_raw(client, "/send", raw)
    assert status == 200, answer
    assert connected.sent[-1].text == "\\ud800"


async def test_invalid_utf8_is_a_400(client):
    status, answer = await post_raw(client, "/connect", b'{"session_id": "\xed\xa0\x80"}')
    assert status == 400 and "UTF-8" in answer["error"], answer


@pytest.mark.parametrize(
    "text",
    [
        "\u200b",  # zero width space
        "\x00",
        "\ufeff",  # byte order mark
        "\u2800",  # braille pattern blank
        "\u3164",  # hangul filler
        "\u115f\u1160",
        "\u200b\u200c\u200d\u2060",
        " \t\r\n\u00a0\u3000",
        "\U000e0041\U000e007f",  # tag characters
        "\u00ad\u034f\ufe0f",
    ],
)
async def test_messages_with_nothing_visible_are_refused(client, engine, connected, text):
    status, answer = await call(
        client, "post", "/send", json={"session_id": "s1", "number": VALID, "message": text}
    )
    assert status == 400 and "message must not be empty" in answer["error"], answer
    assert all_sent(engine) == []


@pytest.mark.parametrize("text", ["a\u200b", ".", "\U0001f600", "\u0661", "\u3164x"])
async def test_messages_with_something_visible_are_sent(client, connected, text):
    status, answer = await call(
        client, "post", "/send", json={"session_id": "s1", "number": VALID, "message": text}
    )
    assert status == 200, answer


# ------------------------------------------------------------------------------------- length --


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("x" * 65_536, True),
        ("x" * 65_537, False),
        ("\U0001f600" * 32_768, True),  # 65,536 UTF-16 code units
        ("\U0001f600" * 32_769, False),  # 32,769 code points, but 65,538 code units
        ("\U0001f600" * 40_000, False),
    ],
)
async def test_message_length_is_counted_as_whatsapp_does(client, connected, text, accepted):
    status, answer = await call(
        client, "post", "/send", json={"session_id": "s1", "number": VALID, "message": text}
    )
    if accepted:
        assert status == 200, answer
    else:
        assert status == 400 and "too long" in answer["error"], answer
        assert "UTF-16" in answer["error"]


# --------------------------------------------------------------------------- the OpenAPI says it --


async def test_openapi_states_the_rules(client):
    doc = await (await client.get("/openapi.json")).get_json()

    def body(path: str) -> dict:
        return doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]

    send = body("/send")
    assert send["additionalProperties"] is False and set(send["required"]) == {"message"}
    assert send["oneOf"] == [{"required": ["number"]}, {"required": ["chat"]}]  # the recipient
    assert send["properties"]["message"]["minLength"] == 1
    number = next(s for s in send["properties"]["number"]["anyOf"] if s.get("type") == "string")["pattern"]
    session_id = next(s for s in send["properties"]["session_id"]["anyOf"] if s.get("type") == "string")
    assert session_id["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    assert (session_id["minLength"], session_id["maxLength"]) == (1, 64)
    for path in ("/connect", "/disconnect", "/reset-reconnect"):
        assert body(path)["additionalProperties"] is False

    import re

    assert re.search(number, "+57 300-123-4567") and not re.search(number, "12345")
    (param,) = doc["paths"]["/sessions/{session_id}"]["delete"]["parameters"]
    assert param["schema"]["pattern"] == session_id["pattern"]
    (query,) = doc["paths"]["/status"]["get"]["parameters"]
    assert query["in"] == "query" and query["schema"]["pattern"] == session_id["pattern"]
    assert "links" in doc["paths"]["/connect"]["post"]["responses"]["200"]
    json.dumps(doc)  # serialisable as is
