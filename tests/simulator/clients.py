"""Trio-side control of ``raw_client.py`` subprocesses (a real neonize client each)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

DRIVER = Path(__file__).with_name("raw_client.py")

Event = dict[str, Any]


class RawClient:
    """One neonize process. ``events`` holds every JSON line it printed, in order."""

    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.events: list[Event] = []
        self._changed = trio.Event()

    @classmethod
    async def start(
        cls,
        nursery: trio.Nursery,
        patched_dir: Path,
        db_path: Path,
        uuid: str,
        env: dict[str, str] | None = None,
    ) -> RawClient:
        """Spawn the driver with the patched neonize first on its path; it connects at once."""
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env["PYTHONPATH"] = str(patched_dir)
        process = await trio.lowlevel.open_process(
            [sys.executable, str(DRIVER), str(db_path), uuid],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env,
        )
        client = cls(process, uuid)
        nursery.start_soon(client._read_events)
        return client

    async def _read_events(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    self.events.append({"event": "garbage", "line": line.decode(errors="replace")})
                self._changed.set()
                self._changed = trio.Event()
        self.events.append({"event": "eof"})
        self._changed.set()

    def named(self, event: str, after: int = 0) -> list[Event]:
        return [e for e in self.events[after:] if e["event"] == event]

    async def wait(
        self,
        event: str,
        timeout: float = 20.0,
        after: int = 0,
        where: Callable[[Event], bool] | None = None,
    ) -> Event:
        """The first ``event`` at index ``after`` or later (optionally matching ``where``)."""
        with trio.fail_after(timeout):
            while True:
                for e in self.events[after:]:
                    if e["event"] == event and (where is None or where(e)):
                        return e
                if self.events and self.events[-1]["event"] == "eof" and event != "eof":
                    raise AssertionError(f"{self.name} exited before {event!r}: {self.events[-5:]}")
                await self._changed.wait()

    async def command(self, **command: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")

    async def send_text(self, to: str, text: str, timeout: float = 30.0) -> Event:
        """Send and return the ``send_result`` (or ``send_error``) event."""
        mark = len(self.events)
        await self.command(cmd="send", to=to, text=text)
        with trio.fail_after(timeout):
            while True:
                for e in self.events[mark:]:
                    if e["event"] in ("send_result", "send_error"):
                        return e
                await self._changed.wait()

    async def exit(self, timeout: float = 10.0) -> None:
        """Ask the driver to exit; kill it if it does not."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.command(cmd="exit")
        with trio.move_on_after(timeout):
            await self.process.wait()
        self.kill()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
