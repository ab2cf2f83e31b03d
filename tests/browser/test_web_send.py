"""The web page's sends carry an Idempotency-Key: a send whose answer was lost, sent again, is
answered and not sent twice; a new message gets a new key. Chromium against the fake engine."""

from __future__ import annotations

import json
import re

import pytest

from tests.browser.test_web_page import card, create_in_page, expect, open_page

pytestmark = pytest.mark.browser


def test_a_lost_answer_retried_sends_once(page, service):
    open_page(page, service)
    create_in_page(page, "pwk")
    c = card(page, "pwk")
    expect(c).to_have_attribute("data-state", "qr_ready")
    service.ok("POST", "/_fake/scan", {"session_id": "pwk", "phone": "15550002222"})
    expect(c).to_have_attribute("data-state", "connected")

    keys: list[str | None] = []

    def lose_the_first_answer(route):
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) == 1:
            route.fetch()  # the server sends the message; the page never hears back
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route(re.compile(r".*/send$"), lose_the_first_answer)
    form = c.locator("form.send-form")
    form.get_by_label("Number").fill("12025550146")
    form.get_by_label("Message").fill("sent once")
    form.get_by_role("button", name="Send").click()
    result = c.locator(".send-result")
    expect(result).to_have_attribute("data-kind", "error")
    expect(result).to_contain_text("will not be sent twice")
    sent = service.ok("GET", "/_fake/sent?session_id=pwk")["messages"]
    assert [m["text"] for m in sent] == ["sent once"], sent

    form.get_by_role("button", name="Send").click()  # the retry: same message, same key
    expect(result).to_have_attribute("data-kind", "success")
    expect(result).to_contain_text(sent[0]["id"])
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys
    assert len(service.ok("GET", "/_fake/sent?session_id=pwk")["messages"]) == 1

    form.get_by_role("button", name="Send").click()  # sent, so this is a new message: a new key
    expect(result).not_to_contain_text(sent[0]["id"])
    expect(result).to_have_attribute("data-kind", "success")
    assert len(keys) == 3 and keys[2] not in (None, keys[0]), keys
    assert [m["text"] for m in service.ok("GET", "/_fake/sent?session_id=pwk")["messages"]] == [
        "sent once"
    ] * 2


def _connected_card(page, service, session_id: str, phone: str):
    open_page(page, service)
    create_in_page(page, session_id)
    c = card(page, session_id)
    expect(c).to_have_attribute("data-state", "qr_ready")
    service.ok("POST", "/_fake/scan", {"session_id": session_id, "phone": phone})
    expect(c).to_have_attribute("data-state", "connected")
    return c


def _answer_sent(route, requests: list) -> None:
    """Stand in for the server's send route: note the request, answer as it would."""
    request = route.request
    requests.append((request.headers, request.post_data_buffer or b""))
    body = '{"success": true, "session_id": "x", "message": "Message sent successfully",'
    body += ' "result": {"id": "STUB1", "timestamp": 1, "to": "15551234567"}}'
    route.fulfill(status=200, content_type="application/json", body=body)


def test_reply_to_a_shown_message(page, service):
    c = _connected_card(page, service, "pwr", "15550003333")
    service.ok(
        "POST",
        "/_fake/incoming",
        {"session_id": "pwr", "from": "15551234567", "text": "ping", "message_id": "IN1"},
    )
    item = c.locator(".recent-item").first
    expect(item.locator(".recent-text")).to_have_text("ping")
    item.get_by_role("button", name=re.compile("^Reply to")).click()
    form = c.locator("form.send-form")
    expect(form.locator(".send-reply")).to_contain_text("Replying to +15551234567: ping")
    expect(form.get_by_label("Number")).to_have_value("15551234567")
    expect(form.get_by_label("Message")).to_be_focused()

    requests: list = []
    page.route(re.compile(r".*/send$"), lambda route: _answer_sent(route, requests))
    form.get_by_label("Message").fill("pong")
    form.get_by_role("button", name="Send").click()
    expect(c.locator(".send-result")).to_have_attribute("data-kind", "success")
    ((headers, body),) = requests
    assert json.loads(body) == {
        "session_id": "pwr",
        "number": "15551234567",
        "message": "pong",
        "reply_to": "IN1",
    }
    assert headers.get("idempotency-key", "").startswith("web-")
    expect(form.locator(".send-reply")).to_be_hidden()  # the next message is no reply

    # Cancelling a reply drops it.
    item.get_by_role("button", name=re.compile("^Reply to")).click()
    form.get_by_role("button", name="Cancel reply").click()
    expect(form.locator(".send-reply")).to_be_hidden()


def test_send_a_file_as_multipart(page, service):
    c = _connected_card(page, service, "pwf", "15550004444")
    requests: list = []
    page.route(re.compile(r".*/send-media$"), lambda route: _answer_sent(route, requests))
    form = c.locator("form.send-form")
    form.get_by_label("Number").fill("12025550147")
    form.get_by_label("Message").fill("a caption")
    form.get_by_label("Attachment").set_input_files(
        files=[{"name": "dot.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\nfake"}]
    )
    form.get_by_role("button", name="Send").click()
    expect(c.locator(".send-result")).to_have_attribute("data-kind", "success")
    ((headers, body),) = requests
    assert headers["content-type"].startswith("multipart/form-data; boundary=")
    assert headers.get("idempotency-key", "").startswith("web-")
    for name, value in [
        ("session_id", "pwf"),
        ("number", "12025550147"),
        ("type", "image"),
        ("caption", "a caption"),
    ]:
        assert f'name="{name}"\r\n\r\n{value}\r\n'.encode() in body, (name, body[:400])
    assert b'name="file"; filename="dot.png"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\nfake' in body
    assert form.get_by_label("Attachment").evaluate("el => el.files.length") == 0  # sent: cleared
