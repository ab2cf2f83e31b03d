"""Fixtures for the browser tests of the web page (web/).

The real service runs as a subprocess (`python -m waservice`) with the scripted fake engine, on a
free loopback port and a temporary data dir; Debian's Chromium is driven by Playwright's sync API.

Needs: `pip install playwright pyzbar pillow`, `apt-get install chromium libzbar0`. Without them
every browser test is skipped, unless WASERVICE_REQUIRE_BROWSER=1 (set it in CI) turns the skip
into a failure so a missing install step cannot hide behind a green run.

Environment knobs:
  WASERVICE_PYTHON         interpreter for the service (default: <repo>/.venv/bin/python if it
                           exists, else the interpreter running pytest)
  WASERVICE_CHROMIUM       browser binary (default: /usr/bin/chromium)
  WASERVICE_BROWSER_MODULE module to run instead of `waservice` (a stand-in while developing)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
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
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    try:
        import PIL  # noqa: F401
        import pyzbar.pyzbar  # noqa: F401
    except ImportError as exc:
        return f"QR decoding unavailable ({exc}; pip install pyzbar pillow, apt-get install libzbar0)"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} not found (apt-get install chromium)"
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the web page in headless Chromium")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problem = _missing_dependency()
    if problem is None or REQUIRE:
        return
    skip = pytest.mark.skip(reason=f"browser tests need: {problem}")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# ------------------------------------------------------------------------------- the service --


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _service_python() -> str:
    if os.environ.get("WASERVICE_PYTHON"):
        return os.environ["WASERVICE_PYTHON"]
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


class Service:
    """One `python -m waservice` process with the fake engine."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        api_key: str | None = None,
        config_path: Path | None = None,
        port: int | None = None,
    ):
        self.data_dir = data_dir
        self.log_path = log_path
        self.api_key = api_key
        self.config_path = config_path
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ)
        for name in ("WASERVICE_API_KEY", "WASERVICE_HOST", "WASERVICE_CONFIG"):
            env.pop(name, None)
        env.update(
            WASERVICE_ENGINE="fake",
            WASERVICE_DATA_DIR=str(self.data_dir),
            WASERVICE_HOST="127.0.0.1",
            PORT=str(self.port),
            PYTHONUNBUFFERED="1",
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        if self.api_key:
            env["WASERVICE_API_KEY"] = self.api_key
        module = os.environ.get("WASERVICE_BROWSER_MODULE", "waservice")
        args = [_service_python(), "-m", module]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200 and json.loads(r.read()).get("status") == "ok":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"service did not answer /health within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def api(
        self, method: str, path: str, body: dict | None = None, key: str | None = None
    ) -> tuple[int, dict]:
        """Call the HTTP API directly (not through the page): (status, parsed JSON)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        key = key if key is not None else self.api_key
        if key:
            req.add_header("X-API-Key", key)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, {"raw": raw.decode(errors="replace")}

    def ok(self, method: str, path: str, body: dict | None = None) -> dict:
        status, data = self.api(method, path, body)
        assert status == 200 and data.get("success", True), f"{method} {path} -> {status} {data}"
        return data

    def wait_state(self, session_id: str, state: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            status, last = self.api("GET", f"/status?session_id={session_id}")
            if status == 200 and last.get("state") == state:
                return last
            time.sleep(0.1)
        raise AssertionError(f"session {session_id} never reached {state}; last /status: {last}")


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator:
    started: list[Service] = []

    def make(api_key: str | None = None, config: str | None = None, start: bool = True) -> Service:
        """config: TOML text passed with --config (environment settings still override it)."""
        n = len(started)
        data_dir = tmp_path / f"data{n}"
        data_dir.mkdir()
        config_path = None
        if config is not None:
            config_path = tmp_path / f"config{n}.toml"
            config_path.write_text(config)
        svc = Service(data_dir, tmp_path / f"service{n}.log", api_key=api_key, config_path=config_path)
        started.append(svc)
        if start:
            svc.start()
        return svc

    yield make
    for svc in started:
        svc.stop()


@pytest.fixture
def service(service_factory) -> Service:
    return service_factory()


# ------------------------------------------------------------------------------- the browser --


@pytest.fixture(scope="session")
def browser():
    problem = _missing_dependency()
    if problem:
        pytest.fail(f"browser tests need: {problem}")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=10_000)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, service_factory, request: pytest.FixtureRequest):
    # Depends on service_factory so that it is torn down first: the browser's idle keep-alive
    # connections are closed before the service gets SIGTERM (they would hold its shutdown).
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    pg = context.new_page()
    js_errors: list[str] = []
    pg.on("pageerror", lambda exc: js_errors.append(str(exc)))

    # The page's own files must load (relative static/ urls): a 404 there is a broken page.
    def on_response(r) -> None:
        if "/static/" in r.url and r.status >= 400:
            js_errors.append(f"{r.status} for {r.url}")

    pg.on("response", on_response)
    pg.set_default_timeout(10_000)
    yield pg
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):  # best effort on a broken page
            pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}-failure.png"), full_page=True)
    context.close()
    assert not js_errors, f"page errors (uncaught JavaScript exceptions, missing assets): {js_errors}"
