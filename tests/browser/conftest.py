"""Fixtures for the browser tests of the web page (web/).

The real service runs as a subprocess (`python -m waservice`, through `tests/process/service.py`)
with the scripted fake engine, on a free loopback port and a temporary data dir; Debian's Chromium
is driven by Playwright's sync API. QR codes are decoded with zxing-cpp (its native code ships in
the wheel), so Chromium is the only thing a fresh machine lacks.

Without Chromium every browser test is skipped with the reason, unless WASERVICE_REQUIRE_BROWSER=1
(`.ci/run` sets it) turns the skip into a failure, so a missing install step cannot hide behind a
green run.

Environment knobs:
  WASERVICE_CHROMIUM       browser binary (default: /usr/bin/chromium)
  WASERVICE_PYTHON         interpreter for the service (default: the one running pytest)
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process.service import ServiceProcess

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = os.environ.get("WASERVICE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRE = os.environ.get("WASERVICE_REQUIRE_BROWSER", "") not in ("", "0", "false", "no")


def _missing_dependency() -> str | None:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return (
            f"Chromium ({CHROMIUM} not found: apt-get install chromium, or set WASERVICE_CHROMIUM; "
            ".ci/run installs it and fails instead of skipping)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (make .venv/.installed installs it)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problem = _missing_dependency()
    if problem is None or REQUIRE:
        return
    skip = pytest.mark.skip(reason=f"browser tests need {problem}")
    for item in items:
        if "browser" in item.keywords or "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# ------------------------------------------------------------------------------- the service --


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator:
    started: list[ServiceProcess] = []

    def make(api_key: str | None = None, config: str | None = None, start: bool = True) -> ServiceProcess:
        """config: TOML text passed with --config (environment settings still override it)."""
        n = len(started)
        config_path = None
        if config is not None:
            config_path = tmp_path / f"config{n}.toml"
            config_path.write_text(config)
        svc = ServiceProcess(
            tmp_path / f"data{n}",
            env={"WASERVICE_ENGINE": "fake"},
            config=config_path,
            api_key=api_key,
            log_path=tmp_path / f"service{n}.log",
        )
        started.append(svc)
        if start:
            svc.start()
        return svc

    yield make
    for svc in started:
        svc.stop()


@pytest.fixture
def service(service_factory) -> ServiceProcess:
    return service_factory()


# ------------------------------------------------------------------------------- the browser --


@pytest.fixture(scope="session")
def browser():
    problem = _missing_dependency()
    if problem:
        pytest.fail(f"browser tests need {problem}")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a safety net: the waits end on the event
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def watch_csp(context, problems: list[str]) -> None:
    """Every Content-Security-Policy violation on the context's pages lands in `problems`."""
    # The event is the page's own report; the console line is Chromium's, for what has no event.
    context.expose_binding("__reportCspViolation", lambda _source, text: problems.append(text))
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => window.__reportCspViolation("
        "`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`));"
    )

    def on_console(message) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            problems.append(message.text)

    context.on("console", on_console)


@pytest.fixture
def page(browser, service_factory, request: pytest.FixtureRequest):
    # Depends on service_factory so that it is torn down first: the browser's idle keep-alive
    # connections are closed before the service gets SIGTERM (they would hold its shutdown).
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    pg = context.new_page()
    js_errors: list[str] = []
    pg.on("pageerror", lambda exc: js_errors.append(str(exc)))
    watch_csp(context, js_errors)

    # The page's own files must load (relative static/ urls): a 404 there is a broken page.
    def on_response(r) -> None:
        if "/static/" in r.url and r.status >= 400:
            js_errors.append(f"{r.status} for {r.url}")

    pg.on("response", on_response)
    pg.set_default_timeout(30_000)
    yield pg
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):  # best effort on a broken page
            pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}-failure.png"), full_page=True)
    context.close()
    assert not js_errors, f"page errors (uncaught JavaScript exceptions, missing assets): {js_errors}"
