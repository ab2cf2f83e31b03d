"""The web page, driven in headless Chromium against the real service with the fake engine.

Fixtures (service, service_factory, page) are in conftest.py beside this file.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.qrcodes import decode_qr

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


# ----------------------------------------------------------------------------------- helpers --


def expect(*args, **kwargs):
    from playwright.sync_api import expect as _expect

    return _expect(*args, **kwargs)


def card(page, session_id: str):
    return page.locator(f'li.card[data-session-id="{session_id}"]')


def open_page(page, service) -> None:
    page.goto(service.url + "/")
    expect(page.locator("#sessions-loading")).to_be_hidden()


def create_in_page(page, session_id: str) -> None:
    page.get_by_label("Session ID").fill(session_id)
    page.get_by_role("button", name="Create & connect").click()


def wait_qr_decodes_to(img, expected: str, timeout: float = 30.0) -> None:
    """Screenshot the <img> until its pixels decode to `expected` (what a phone would read)."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = decode_qr(img.screenshot())
        if seen == [expected]:
            return
        time.sleep(0.25)
    raise AssertionError(f"QR image decodes to {seen}, expected {expected!r}")


# ------------------------------------------------------------------------------------- tests --


def test_create_session_shows_scannable_qr_that_follows_rotation(page, service):
    open_page(page, service)
    # Keyboard only: type the id and press Enter.
    page.get_by_label("Session ID").focus()
    page.keyboard.type("pw1")
    page.keyboard.press("Enter")

    c = card(page, "pw1")
    expect(c).to_have_attribute("data-state", "qr_ready")
    expect(c.locator(".badge")).to_have_text(re.compile("QR ready"))

    img = c.locator("img.qr")
    expect(img).to_be_visible()
    box = img.bounding_box()
    assert box and box["width"] >= 264 and box["height"] >= 264, f"QR too small to scan: {box}"
    assert img.evaluate("el => getComputedStyle(el).imageRendering") == "pixelated"
    wait_qr_decodes_to(img, "fake-qr:pw1:1")

    service.ok("POST", "/_fake/rotate-qr", {"session_id": "pw1"})
    _, qr = service.api("GET", "/qr?session_id=pw1")
    assert qr.get("code") == "fake-qr:pw1:2", qr
    # The page polls /qr while qr_ready and swaps the image without a reload.
    wait_qr_decodes_to(img, "fake-qr:pw1:2")

    # Deleting the session while its QR shows stops the QR polling.
    c.get_by_role("button", name="Delete").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Delete").click()
    expect(c).to_have_count(0)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/qr?" in r.url else None)
    page.wait_for_timeout(3500)
    assert polls == [], f"the page still polls /qr for a deleted session: {polls}"


def test_scan_send_disconnect_delete(page, service):
    open_page(page, service)
    create_in_page(page, "pw2")
    c = card(page, "pw2")
    expect(c).to_have_attribute("data-state", "qr_ready")
    expect(c.locator("img.qr")).to_be_visible()

    service.ok("POST", "/_fake/scan", {"session_id": "pw2", "phone": "15550001111"})
    expect(c).to_have_attribute("data-state", "connected")
    expect(c.locator(".badge")).to_have_text(re.compile("Connected"))
    expect(c.locator(".phone")).to_contain_text("15550001111")
    expect(c.locator(".qr-box")).to_be_hidden()

    # Send a test message through the card's form.
    form = c.locator("form.send-form")
    expect(form).to_be_visible()
    form.get_by_label("Number").fill("12025550144")
    form.get_by_label("Message").fill("hi from the browser test")
    form.get_by_role("button", name="Send").click()
    result = c.locator(".send-result")
    expect(result).to_have_attribute("data-kind", "success")
    sent = service.ok("GET", "/_fake/sent?session_id=pw2")["messages"]
    assert [(m["to"], m["text"]) for m in sent] == [("12025550144", "hi from the browser test")], sent
    expect(result).to_contain_text(sent[0]["id"])

    # Check status updates the card and says so.
    c.get_by_role("button", name="Check status").click()
    expect(c.locator(".card-msg")).to_contain_text("Connected")

    # Disconnect.
    c.get_by_role("button", name="Disconnect").click()
    expect(c).to_have_attribute("data-state", "disconnected")
    expect(c.locator(".badge")).to_have_text(re.compile("Disconnected"))
    expect(form).to_be_hidden()

    # `default` offers no Delete.
    expect(card(page, "default").get_by_role("button", name="Delete")).to_have_count(0)

    # Delete: cancelling the confirmation keeps the card ...
    c.get_by_role("button", name="Delete").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("pw2")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(c).to_have_count(1)
    # ... accepting it deletes the session.
    c.get_by_role("button", name="Delete").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(c).to_have_count(0)
    ids = [s["session_id"] for s in service.ok("GET", "/sessions")["sessions"]]
    assert "pw2" not in ids


def test_delete_that_could_not_unlink_says_so(page, service):
    open_page(page, service)
    create_in_page(page, "pw4")
    c = card(page, "pw4")
    # The click only queues the page's request: scan once the session shows its QR.
    expect(c).to_have_attribute("data-state", "qr_ready")
    service.ok("POST", "/_fake/scan", {"session_id": "pw4", "phone": "12025550145"})
    expect(c).to_have_attribute("data-state", "connected")
    service.ok("POST", "/_fake/fail-logouts", {"fail": True})
    try:
        c.get_by_role("button", name="Delete").click()
        page.locator("#confirm-dialog").get_by_role("button", name="Delete").click()
        expect(c).to_have_count(0)
        live = page.locator("#live")
        expect(live).to_contain_text("pw4: deleted, but could not unlink the device")
        expect(live).to_contain_text("Linked devices")
        expect(live).to_have_attribute("data-kind", "error")
    finally:
        service.ok("POST", "/_fake/fail-logouts", {"fail": False})


def test_invalid_ids_rejected_in_page_and_server_errors_shown(page, service):
    open_page(page, service)
    connects: list[str] = []
    page.on("request", lambda r: connects.append(r.url) if r.url.endswith("/connect") else None)

    field = page.get_by_label("Session ID")
    error = page.locator("#create-error")
    for bad, why in [("../x", "Only letters"), ("a" * 65, "at most 64"), ("has space", "Only letters")]:
        field.fill(bad)
        page.get_by_role("button", name="Create & connect").click()
        expect(error).to_be_visible()
        expect(error).to_contain_text(why)
        expect(field).to_have_attribute("aria-invalid", "true")
    field.fill("")
    page.get_by_role("button", name="Create & connect").click()
    expect(error).to_contain_text("Enter a session ID")
    assert connects == [], f"the page sent invalid ids to the server: {connects}"

    # A valid id clears the message.
    field.fill("a" * 64)
    expect(error).to_be_hidden()

    # The server's rule is the page's rule, so no id passes the page and fails the server:
    # check instead that a server refusal is shown verbatim, with "Get QR" on a disconnected
    # session (404 "no QR") ...
    status, refusal = service.api("GET", "/qr?session_id=default")
    assert status == 404 and refusal["success"] is False, (status, refusal)
    d = card(page, "default")
    d.get_by_role("button", name="Get QR").click()
    expect(d.locator(".card-msg")).to_have_text(refusal["error"])
    expect(d.locator(".card-msg")).to_have_attribute("data-kind", "error")
    expect(page.locator("#live")).to_contain_text(refusal["error"])

    # ... and with a send the server refuses (implausible number) on a connected session.
    service.ok("POST", "/connect", {"session_id": "pw3"})
    service.wait_state("pw3", "qr_ready")
    service.ok("POST", "/_fake/scan", {"session_id": "pw3", "phone": "15550003333"})
    c = card(page, "pw3")
    expect(c).to_have_attribute("data-state", "connected")
    status, refusal = service.api(
        "POST", "/send", {"session_id": "pw3", "number": "notanumber", "message": "x"}
    )
    assert status == 400, (status, refusal)
    form = c.locator("form.send-form")
    form.get_by_label("Number").fill("notanumber")
    form.get_by_role("button", name="Send").click()
    expect(c.locator(".send-result")).to_have_text(refusal["error"])
    expect(c.locator(".send-result")).to_have_attribute("data-kind", "error")
    assert service.ok("GET", "/_fake/sent?session_id=pw3")["messages"] == []


def test_api_key_prompt(page, service_factory):
    service = service_factory(api_key="secret")
    page.goto(service.url + "/")

    panel = page.locator("#key-panel")
    expect(panel).to_be_visible()
    key_field = panel.get_by_label("API key")
    expect(key_field).to_be_focused()
    expect(page.locator("li.card")).to_have_count(0)

    # A wrong key is rejected and the prompt stays.
    key_field.fill("wrong")
    panel.get_by_role("button", name="Save key").click()
    expect(panel).to_be_visible()
    expect(page.locator("#key-error")).to_contain_text("rejected")

    key_field.fill("secret")
    panel.get_by_role("button", name="Save key").click()
    expect(card(page, "default")).to_be_visible()
    expect(panel).to_be_hidden()
    assert page.evaluate("localStorage.getItem('waservice.apiKey')") == "secret"

    # The stored key is sent on every request, also after a reload.
    page.reload()
    expect(card(page, "default")).to_be_visible()
    expect(panel).to_be_hidden()
    create_in_page(page, "keyed")
    expect(card(page, "keyed")).to_have_attribute("data-state", "qr_ready")
    wait_qr_decodes_to(card(page, "keyed").locator("img.qr"), "fake-qr:keyed:1")

    # Forget it: the next request is refused and the prompt comes back.
    page.get_by_role("button", name="API key").click()
    expect(panel).to_be_visible()
    panel.get_by_role("button", name="Forget key").click()
    assert page.evaluate("localStorage.getItem('waservice.apiKey')") is None
    expect(page.locator("#key-error")).to_contain_text("requires an API key")


def test_unreachable_banner(page, service):
    open_page(page, service)
    banner = page.locator("#offline-banner")
    expect(banner).to_be_hidden()

    service.stop()
    expect(banner).to_be_visible(timeout=15_000)
    expect(banner).to_contain_text("unreachable")

    service.start()  # same port and data dir
    expect(banner).to_be_hidden(timeout=15_000)
    expect(card(page, "default")).to_be_visible()


def _grid_setup(service) -> None:
    for sid in ("sales", "support", "backup", "marketing"):
        service.ok("POST", "/connect", {"session_id": sid})
    for sid in ("sales", "support", "backup", "marketing"):
        service.wait_state(sid, "qr_ready")
    service.ok("POST", "/_fake/scan", {"session_id": "sales", "phone": "573001234567"})
    service.ok("POST", "/_fake/scan", {"session_id": "backup", "phone": "15550004444"})
    service.ok("POST", "/_fake/scan", {"session_id": "marketing", "phone": "15550005555"})
    service.wait_state("backup", "connected")
    service.wait_state("marketing", "connected")
    service.ok("POST", "/disconnect", {"session_id": "marketing"})


def test_grid_screenshot(page, service_factory):
    """Several sessions in different states; saved for a person to look at."""
    # A long first reconnect delay keeps `backup` in `error` while the screenshot is taken.
    service = service_factory(config="[reconnect]\ninitial_delay = 60.0\n")
    _grid_setup(service)
    open_page(page, service)
    expect(card(page, "support")).to_have_attribute("data-state", "qr_ready")
    expect(card(page, "support").locator("img.qr")).to_be_visible()
    expect(card(page, "sales")).to_have_attribute("data-state", "connected")
    expect(card(page, "marketing")).to_have_attribute("data-state", "disconnected")

    # An unexpected disconnect: `error`, with its reason and the reconnect attempt counted.
    service.ok("POST", "/_fake/fail", {"session_id": "backup", "reason": "stream error 503"})
    page.get_by_role("button", name="Refresh").click()
    b = card(page, "backup")
    expect(b).to_have_attribute("data-state", "error")
    expect(b.locator(".badge")).to_have_text(re.compile("Error"))
    expect(b.locator(".last-error")).to_contain_text("stream error 503")
    expect(b.locator(".attempts")).to_have_text("1")
    expect(b.locator(".changed")).to_have_text(re.compile("now|sec"))

    page.mouse.move(0, 0)
    page.wait_for_timeout(400)  # let button colour transitions finish
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "grid.png"), full_page=True)

    # The same page on a phone-sized screen: one column, nothing cut off sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page scrolls sideways on a phone: {width}px"
    boxes = [card(page, sid).bounding_box() for sid in ("default", "backup")]
    assert boxes[0]["x"] == boxes[1]["x"], "cards should stack in one column on a phone"
    page.wait_for_timeout(200)
    page.screenshot(path=str(ARTIFACTS / "grid-phone.png"), full_page=True)

    # Connect from the page ends the wait: the stored pairing connects again.
    b.get_by_role("button", name="Connect", exact=True).click()
    expect(b).to_have_attribute("data-state", "connected")
    expect(b.locator(".last-error")).to_be_hidden()
    expect(b.locator(".attempts")).to_have_text("0")


def test_works_behind_a_path_prefix(page, service):
    """A reverse proxy serving the service under /wa/: every url the page uses must be relative."""
    outside: list[str] = []
    streams: list[str] = []
    prefix = service.url + "/wa/"

    def proxy(route) -> None:
        url = route.request.url
        if not url.startswith(prefix):
            outside.append(url)
            route.abort()
            return
        if url[len(prefix) :].startswith("events"):
            streams.append(url)  # route.fetch cannot pass a stream on: the page falls back to polling
            route.abort()
            return
        response = route.fetch(url=service.url + "/" + url[len(prefix) :])
        route.fulfill(response=response)

    page.route(service.url + "/**", proxy)
    page.goto(prefix)
    expect(card(page, "default")).to_be_visible()
    create_in_page(page, "proxied")
    c = card(page, "proxied")
    expect(c).to_have_attribute("data-state", "qr_ready")
    wait_qr_decodes_to(c.locator("img.qr"), "fake-qr:proxied:1")
    c.get_by_role("button", name="Check status").click()
    expect(c.locator(".card-msg")).to_contain_text("QR ready")
    assert outside == [], f"the page used urls outside its prefix: {outside}"
    assert streams, "the page never tried the event stream"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessibility_axe(browser, service_factory, scheme):
    """axe-core (bundled by axe-playwright-python) finds no violations, in both colour schemes."""
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:
        if os.environ.get("WASERVICE_REQUIRE_BROWSER", "") not in ("", "0", "false", "no"):
            raise
        pytest.skip("pip install axe-playwright-python")
    service = service_factory(config="[reconnect]\ninitial_delay = 60.0\n")
    _grid_setup(service)
    service.ok("POST", "/_fake/fail", {"session_id": "backup", "reason": "stream error 503"})
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
    try:
        page = context.new_page()
        open_page(page, service)
        expect(card(page, "support").locator("img.qr")).to_be_visible()
        expect(card(page, "backup")).to_have_attribute("data-state", "error")
        # Messages and the key panel are part of the page too.
        d = card(page, "default")
        d.get_by_role("button", name="Get QR").click()
        expect(d.locator(".card-msg")).to_be_visible()
        page.get_by_label("Session ID").fill("bad/id")
        expect(page.locator("#create-error")).to_be_visible()
        page.get_by_role("button", name="API key").click()
        expect(page.locator("#key-panel")).to_be_visible()
        page.wait_for_timeout(400)  # transitions settle before colours are measured

        results = Axe().run(page)
        problems = [
            f"{v['id']} ({v['impact']}): {v['help']} -> "
            + "; ".join(n["target"][0] + " " + n.get("failureSummary", "") for n in v["nodes"][:4])
            for v in results.response["violations"]
        ]
        assert not problems, "\n".join(problems)
    finally:
        context.close()


def test_qr_images_are_fetched_only_for_cards_in_view(page, service_factory):
    service = service_factory(config="[server]\ncreate_rate = 0\n")
    ids = [f"q{i:02d}" for i in range(40)]
    for sid in ids:
        service.ok("POST", "/connect", {"session_id": sid})
    for sid in ids:
        service.wait_state(sid, "qr_ready")
    polled: list[str] = []
    page.on("request", lambda r: polled.append(r.url.rsplit("=", 1)[-1]) if "/qr?" in r.url else None)
    open_page(page, service)
    expect(card(page, "q00").locator("img.qr")).to_be_visible()
    page.wait_for_timeout(3000)  # at least one more poll round (every 2.5 s)
    first_screen = set(polled)
    assert "q00" in first_screen and "q39" not in first_screen
    assert len(first_screen) < 20, f"the page fetched QR images of cards out of view: {sorted(first_screen)}"

    last = card(page, "q39")
    last.scroll_into_view_if_needed()
    expect(last.locator("img.qr")).to_be_visible()
    wait_qr_decodes_to(last.locator("img.qr"), "fake-qr:q39:1")
    # New codes for a card in view and one out of it: only the one in view fetches its image.
    polled.clear()
    for sid in ("q00", "q39"):
        service.ok("POST", "/_fake/rotate-qr", {"session_id": sid})
    wait_qr_decodes_to(last.locator("img.qr"), "fake-qr:q39:2")
    assert "q39" in polled and "q00" not in polled, sorted(set(polled))
