"""Run the real `waservice` process on a free port for tests (and benchmarks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """`python -m waservice` with its own data dir and port; stderr goes to a log file."""

    def __init__(
        self,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        config: Path | None = None,
        pythonpath: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"service-{self.port}.log"
        self._env = dict(env or {})
        self._config = config
        self._pythonpath = pythonpath
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> ServiceProcess:
        env = {**os.environ, "PORT": str(self.port), "WASERVICE_DATA_DIR": str(self.data_dir), **self._env}
        if self._pythonpath is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self._pythonpath), env.get("PYTHONPATH")]))
        args = [sys.executable, "-m", "waservice"]
        if self._config is not None:
            args += ["--config", str(self._config)]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"waservice exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"waservice did not answer /health in {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; returns the exit code."""
        assert self.proc is not None
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

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
