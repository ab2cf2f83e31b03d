"""The web page's sends carry an Idempotency-Key: a send whose answer was lost, sent again, is
answered and not sent twice; a new message gets a new key. Chromium against the fake engine."""

from __future__ import annotations

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
