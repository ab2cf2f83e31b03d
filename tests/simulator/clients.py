"""Trio-side control of the raw neonize driver (``raw_client.py``), for tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import trio

DRIVER = Path(__file__).with_name("raw_client.py")

Event = dict[str, Any]


class RawClient:
    """One driver process hosting neonize clients. ``events`` holds every JSON line it printed, in order;
    ``on_event`` (if given) sees each one as it arrives."""

    def __init__(self, process: trio.Process, name: str, on_event: Callable[[Event], None] | None) -> None:
        self.process = process
        self.name = name
        self.events: list[Event] = []
        self._on_event = on_event
        self._changed = trio.Event()
        self._send_lock = trio.Lock()
        self._consumed: dict[str, int] = {}  # event kind -> index after the last reply taken

    @classmethod
    async def start(
        cls,
        nursery: trio.Nursery,
        patched_dir: Path,
        data_dir: Path,
        name: str = "raw",
        env: dict[str, str] | None = None,
        stderr: IO[bytes] | None = None,
        on_event: Callable[[Event], None] | None = None,
        timeout: float = 60.0,
    ) -> RawClient:
        """Spawn the driver with the patched neonize first on its path; returns once neonize is loaded.
        Clients live in ``data_dir/<id>/whatsmeow.db``."""
        data_dir.mkdir(parents=True, exist_ok=True)
        process = await trio.lowlevel.open_process(
            [sys.executable, str(DRIVER), str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, **(env or {}), "PYTHONPATH": str(patched_dir)},
        )
        client = cls(process, name, on_event)
        nursery.start_soon(client._read_events)
        await client.wait("ready", timeout)
        return client

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read_events(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    self._add(json.loads(line))
                except ValueError:
                    self._add({"event": "garbage", "line": line.decode(errors="replace")})
        self._add({"event": "eof"})

    def _add(self, event: Event) -> None:
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)
        self._changed.set()
        self._changed = trio.Event()

    def named(self, event: str, after: int = 0) -> list[Event]:
        return [e for e in self.events[after:] if e["event"] == event]

    async def wait(
        self,
        event: str,
        timeout: float = 30.0,
        after: int = 0,
        where: Callable[[Event], bool] | None = None,
    ) -> Event:
        """The first ``event`` at index ``after`` or later (optionally matching ``where``)."""
        return self.events[await self._wait_index(event, timeout, after, where)]

    async def reply(self, event: str, timeout: float) -> Event:
        """The next ``event`` not yet taken by an earlier ``reply`` (answers to commands, in order)."""
        index = await self._wait_index(event, timeout, self._consumed.get(event, 0), None)
        self._consumed[event] = index + 1
        return self.events[index]

    async def _wait_index(
        self, event: str, timeout: float, after: int, where: Callable[[Event], bool] | None
    ) -> int:
        index = after
        with trio.fail_after(timeout):
            while True:
                for e in self.events[index:]:
                    if e["event"] == event and (where is None or where(e)):
                        return index
                    if e["event"] == "eof" and event != "eof":
                        raise AssertionError(f"{self.name} exited before {event!r}: {self.events[-5:]}")
                    index += 1
                await self._changed.wait()

    async def command(self, **command: Any) -> None:
        assert self.process.stdin is not None
        async with self._send_lock:  # concurrent writers would interleave their lines
            await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")

    async def connect(self, *ids: str) -> None:
        await self.command(cmd="connect", ids=list(ids))

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

    async def send_content(self, to: str, kind: str, timeout: float = 30.0, **fields: Any) -> Event:
        """Send another kind of message (see ``raw_client.py``: reply, location, contact, reaction,
        edit, revoke, image ... with ``data_b64``); returns ``send_result`` or ``send_error``."""
        mark = len(self.events)
        await self.command(cmd="send_content", to=to, kind=kind, **fields)
        return await self.wait_any(("send_result", "send_error"), timeout, mark)

    async def download(self, msg_id: str, timeout: float = 30.0) -> Event:
        """``download_any`` on a message this client received: ``downloaded`` or ``download_error``."""
        mark = len(self.events)
        await self.command(cmd="download", id=msg_id)
        return await self.wait_any(("downloaded", "download_error"), timeout, mark)

    async def pair_phone(self, phone: str, timeout: float = 30.0) -> Event:
        """``PairPhone`` for ``phone``: the ``pair_code`` event (its ``code``) or ``pair_phone_error``."""
        mark = len(self.events)
        await self.command(cmd="pair_phone", phone=phone)
        return await self.wait_any(("pair_code", "pair_phone_error"), timeout, mark)

    async def wait_any(self, events: tuple[str, ...], timeout: float, after: int) -> Event:
        """The first event at ``after`` or later whose name is one of ``events``."""
        with trio.fail_after(timeout):
            while True:
                for e in self.events[after:]:
                    if e["event"] in events:
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
