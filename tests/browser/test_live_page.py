"""The page on the live event stream (GET /events), in headless Chromium against the real service
with the fake engine: changes appear within a second without polling, messages fill the cards.

Fixtures (service, service_factory, page) are in conftest.py beside this file.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.browser

KEY = "live-page-key"


def expect(*args, **kwargs):
    from playwright.sync_api import expect as _expect

    return _expect(*args, **kwargs)


def card(page, session_id: str):
    return page.locator(f'li.card[data-session-id="{session_id}"]')


def open_live(page, service, key: str | None = None) -> list[str]:
    """Open the page (with the key stored), wait until its stream is live; returns the API urls it
    requests from then on."""
    if key:
        page.add_init_script(f"localStorage.setItem('waservice.apiKey', {key!r})")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url.removeprefix(service.url)))
    page.goto(service.url + "/")
    expect(page.locator("#live-status")).to_have_attribute("data-live", "on")
    expect(page.locator("#sessions-loading")).to_be_hidden()
    return requests


def test_a_state_change_and_a_new_qr_show_within_a_second_without_polling(page, service_factory):
    service = service_factory(api_key=KEY)
    service.ok("POST", "/connect", {"session_id": "live1"})
    service.wait_state("live1", "qr_ready")
    requests = open_live(page, service, KEY)
    c = card(page, "live1")
    expect(c).to_have_attribute("data-state", "qr_ready")
    img = c.locator("img.qr")
    expect(img).to_have_attribute("data-code", "fake-qr:live1:1")
    # The key never goes into a url (the stream's included).
    assert not [u for u in requests if KEY in u], requests

    requests.clear()
    service.ok("POST", "/_fake/rotate-qr", {"session_id": "live1"})
    expect(img).to_have_attribute("data-code", "fake-qr:live1:2", timeout=1000)

    requests.clear()
    started = time.monotonic()
    service.ok("POST", "/_fake/scan", {"session_id": "live1", "phone": "15550002222"})
    expect(c).to_have_attribute("data-state", "connected", timeout=1000)
    elapsed = time.monotonic() - started
    expect(c.locator(".phone")).to_contain_text("15550002222")
    polls = [u for u in requests if u.startswith(("/sessions", "/status"))]
    assert polls == [], f"the change came by polling, not the stream: {polls}"
    print(f"state change on the page {elapsed * 1000:.0f} ms after the scan answered")


def test_messages_fill_the_card_from_the_log_then_live(page, service_factory):
    service = service_factory()
    service.ok("POST", "/connect", {"session_id": "default"})
    service.wait_state("default", "qr_ready")
    service.ok("POST", "/_fake/scan", {"session_id": "default", "phone": "15550003333"})
    service.wait_state("default", "connected")
    # Before the page opens: it reads these back from the log.
    for n in range(21):
        service.ok("POST", "/_fake/incoming", {"from": "15557770000", "text": f"earlier {n}"})
    open_live(page, service)
    items = card(page, "default").locator(".recent-item")
    expect(items).to_have_count(20)  # the newest 20, newest first
    expect(items.first.locator(".recent-text")).to_have_text("earlier 20")
    expect(items.last.locator(".recent-text")).to_have_text("earlier 1")

    # Live: markup stays text; a push name and the number name the sender.
    body = {"from": "15551234567", "push_name": "Ann <i>", "text": "<b>hi</b> & bye"}
    service.ok("POST", "/_fake/incoming", body)
    newest = items.first
    expect(newest.locator(".recent-text")).to_have_text("<b>hi</b> & bye", timeout=1000)
    expect(newest.locator(".recent-from")).to_have_text("Ann <i> (+15551234567)")
    assert newest.locator("b, i").count() == 0
    expect(items).to_have_count(20)

    # A photo without a caption shows its kind.
    service.ok("POST", "/_fake/incoming", {"from": "15551234567", "kind": "image"})
    expect(items.first.locator(".recent-text")).to_have_text("[Image]")


def test_polling_takes_over_while_the_stream_is_down(page, service):
    """The stream refused (as a proxy that cannot stream would): the page polls, and says so."""
    page.route("**/events?**", lambda route: route.abort())
    page.goto(service.url + "/")
    expect(page.locator("#sessions-loading")).to_be_hidden()
    expect(page.locator("#live-status")).to_have_attribute("data-live", "off")
    expect(page.locator("#live-status")).to_have_text("Polling")
    service.ok("POST", "/connect", {"session_id": "polled"})
    expect(card(page, "polled")).to_have_attribute("data-state", "qr_ready")  # within a poll round
