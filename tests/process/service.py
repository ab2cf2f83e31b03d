"""The real `waservice` process on a free port: the one harness for process, simulator and browser tests
and for the benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _inherited_env() -> dict[str, str]:
    """This process's environment without the service's own settings: a developer's shell (an API key,
    a data dir) must not change what a test's service does. Tests pass what they need in ``env``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WASERVICE_") and k != "PORT"}


class ServiceProcess:
    """`python -m waservice` with its own data dir and port; its stderr (the logs) goes to ``log_path``.

    ``env`` adds service settings (e.g. ``WASERVICE_ENGINE=fake``); ``pythonpath`` goes first on its
    path (a patched neonize copy). ``stop()`` then ``start()`` restarts it on the same port and data.
    ``WASERVICE_PYTHON`` chooses the interpreter (default: the one running the tests). ``source`` is
    the checkout whose waservice runs (default: this one; a benchmark's baseline runs another).
    """

    def __init__(
        self,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        config: Path | None = None,
        pythonpath: Path | None = None,
        api_key: str | None = None,
        log_path: Path | None = None,
        source: Path = REPO,
    ) -> None:
        self.data_dir = data_dir
        self.source = source
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self.log_path = log_path or data_dir.parent / f"service-{self.port}.log"
        self._env = dict(env or {})
        self._config = config
        self._pythonpath = pythonpath
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> ServiceProcess:
        """Start it and return once ``/health`` answers."""
        env = {
            **_inherited_env(),
            "PORT": str(self.port),
            "WASERVICE_DATA_DIR": str(self.data_dir),
            "PYTHONUNBUFFERED": "1",
            **self._env,
        }
        if self.api_key:
            env["WASERVICE_API_KEY"] = self.api_key
        paths = [self._pythonpath, self.source, os.environ.get("PYTHONPATH")]
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths if p)
        args = [os.environ.get("WASERVICE_PYTHON") or sys.executable, "-m", "waservice"]
        if self._config is not None:
            args += ["--config", str(self._config)]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # Go prints banners on fd 1; the logs are on stderr.
            self.proc = subprocess.Popen(
                args,
                cwd=self.source,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"waservice exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"waservice did not answer /health in {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then wait (SIGKILL after ``timeout``); returns the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:]) or "(no log)"

    # -- the HTTP API, synchronously ------------------------------------------------------------

    def api(
        self, method: str, path: str, body: dict | None = None, key: str | None = None
    ) -> tuple[int, Any]:
        """Call the HTTP API: (status, parsed JSON, or ``{"raw": text}`` if the body is not JSON)."""
        key = key if key is not None else self.api_key
        headers = {"X-API-Key": key} if key else {}
        response = httpx.request(method, self.url + path, json=body, headers=headers, timeout=30)
        try:
            return response.status_code, response.json() if response.content else None
        except ValueError:
            return response.status_code, {"raw": response.text}

    def ok(self, method: str, path: str, body: dict | None = None) -> dict:
        status, data = self.api(method, path, body)
        assert status == 200 and data.get("success", True), f"{method} {path} -> {status} {data}"
        return data

    def wait_state(self, session_id: str, state: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            status, last = self.api("GET", f"/status?session_id={session_id}")
            if status == 200 and last.get("state") == state:
                return last
            time.sleep(0.05)
        raise AssertionError(f"session {session_id} never reached {state}; last /status: {last}")

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
