"""The page and Swagger UI under the Content-Security-Policy (issue 11 item 4): the `page` fixture
fails any test that triggers a violation; here, that the watch sees one and the policy holds."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import watch_csp

pytestmark = pytest.mark.browser


def test_the_policy_blocks_inline_script_and_the_watch_reports_it(browser, service) -> None:
    context = browser.new_context()
    try:
        problems: list[str] = []
        watch_csp(context, problems)
        page = context.new_page()
        response = page.goto(service.url + "/")
        assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        expect(page.locator("#sessions-heading")).to_be_visible()
        with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
            page.evaluate(
                "() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
                " document.body.append(s); }"
            )
        assert page.evaluate("() => window.ran") is None  # the inline script never ran
        assert any("script-src" in p for p in problems), problems
    finally:
        context.close()


def test_the_page_cannot_be_framed(page: Page, service) -> None:
    response = page.goto(service.url + "/api-docs")
    assert response is not None
    headers = response.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("waservice")
