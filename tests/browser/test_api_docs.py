"""Swagger UI at /api-docs in Chromium: it renders the OpenAPI 3.1 document, lists every operation,
and "Try it out" -> "Execute" reaches the service (issue 7 item 7)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

OPERATIONS = [
    ("GET", "/health"),
    ("GET", "/sessions"),
    ("DELETE", "/sessions/{session_id}"),
    ("POST", "/connect"),
    ("GET", "/qr"),
    ("GET", "/status"),
    ("POST", "/disconnect"),
    ("POST", "/reset-reconnect"),
    ("POST", "/send"),
]


def operation(page: Page, method: str, path: str):
    return page.locator(f".opblock-{method.lower()}:has(.opblock-summary-path[data-path='{path}'])")


def execute(page: Page, method: str, path: str, fill: dict[str, str] | None = None):
    block = operation(page, method, path)
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    for label, value in (fill or {}).items():
        block.locator(label).fill(value)
    block.get_by_role("button", name="Execute").click()
    return block.locator(".live-responses-table .response")


def test_swagger_ui_renders_and_runs_requests(page: Page, service) -> None:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(service.url + "/api-docs")

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("waservice")
    expect(page.get_by_text("Unable to render this definition")).to_have_count(0)
    for method, path in OPERATIONS:
        expect(operation(page, method, path)).to_have_count(1)

    health = execute(page, "GET", "/health")
    expect(health.locator(".response-col_status")).to_have_text("200")
    expect(health.locator(".response-col_description")).to_contain_text('"status": "ok"')

    status = execute(page, "GET", "/status", {"input[placeholder='session_id']": "default"})
    expect(status.locator(".response-col_status")).to_have_text("200")
    expect(status.locator(".response-col_description")).to_contain_text('"state": "disconnected"')

    # A state-changing request from the docs page passes the Origin check (same origin).
    connect = execute(page, "POST", "/connect")
    expect(connect.locator(".response-col_status")).to_have_text("200")
    expect(connect.locator(".response-col_description")).to_contain_text("Connection initiated")

    outside = [url for url in requests if not url.startswith(service.url)]
    assert outside == [], f"the docs page loaded something from elsewhere: {outside}"
