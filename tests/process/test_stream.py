"""GET /events through the real process (hypercorn), read on raw sockets: events arrive, a client
that goes away frees its place, and SIGTERM ends open streams within the shutdown grace."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from .service import ServiceProcess

KEY = "stream-test-key"
SLACK = 20.0  # safety net only: every wait ends on an event long before


class EventStreamReader:
    """GET /events on a raw socket: the response head, then the SSE blocks of its chunked body."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.head = b""
        self._raw = b""  # received, not yet de-chunked
        self._text = b""  # de-chunked, not yet split into blocks
        self.finished = False  # the last chunk (size 0) arrived

    @classmethod
    async def open(cls, port: int, path: str = "/events", key: str | None = KEY) -> EventStreamReader:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        headers = f"X-API-Key: {key}\r\n" if key else ""
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
        reader = cls(stream)
        while b"\r\n\r\n" not in reader._raw:
            await reader._receive()
        reader.head, _, reader._raw = reader._raw.partition(b"\r\n\r\n")
        return reader

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    async def _receive(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self._raw += data

    def _dechunk(self) -> None:
        while not self.finished and b"\r\n" in self._raw:
            size_line, _, rest = self._raw.partition(b"\r\n")
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            self._text += rest[:size]
            self._raw = rest[size + 2 :]
            self.finished = size == 0

    async def block(self) -> dict[str, list[str]]:
        """The next SSE block as {field: [values]} ("" holds the comments)."""
        while b"\n\n" not in self._text:
            if self.finished:
                raise EOFError(f"the stream ended; left over: {self._text!r}")
            self._dechunk()
            if b"\n\n" not in self._text and not self.finished:
                await self._receive()
        raw, _, self._text = self._text.partition(b"\n\n")
        fields: dict[str, list[str]] = {}
        for line in raw.decode().split("\n"):
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
        return fields

    async def event(self, type_: str) -> dict:
        """The envelope of the next event of this type."""
        while True:
            block = await self.block()
            if block.get("event") == [type_]:
                envelope = json.loads(block["data"][0])
                assert block["id"] == [str(envelope["id"])]
                return envelope

    async def rest(self) -> list[dict[str, list[str]]]:
        """The blocks up to the end of the body (the server ended the stream cleanly)."""
        blocks: list[dict[str, list[str]]] = []
        while True:
            try:
                blocks.append(await self.block())
            except EOFError:
                assert self.finished, "the connection closed before the body's last chunk"
                return blocks


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator:
    started: list[ServiceProcess] = []

    def make(config: str = "") -> ServiceProcess:
        folder = tmp_path / f"s{len(started)}"
        folder.mkdir()
        (folder / "config.toml").write_text(config)
        service = ServiceProcess(
            folder / "data", env={"WASERVICE_ENGINE": "fake"}, config=folder / "config.toml", api_key=KEY
        )
        started.append(service)
        return service.start()

    yield make
    for service in started:
        service.stop()


async def test_session_events_arrive_on_the_stream(service_factory):
    service = service_factory()
    with trio.fail_after(SLACK):
        refused = await EventStreamReader.open(service.port, key=None)
        assert refused.status == 401
        reader = await EventStreamReader.open(service.port, "/events?session_id=live1")
        assert reader.status == 200 and b"text/event-stream" in reader.head.lower()
        assert (await reader.block())["retry"] == ["3000"]
        await trio.to_thread.run_sync(service.ok, "POST", "/connect", {"session_id": "live1"})
        status = await reader.event("session.status")
        assert status["session_id"] == "live1" and status["data"]["state"] == "connecting"
        first = await reader.event("session.qr")
        await trio.to_thread.run_sync(service.ok, "POST", "/_fake/rotate-qr", {"session_id": "live1"})
        second = await reader.event("session.qr")
        assert (first["data"]["qr"], second["data"]["qr"]) == ("fake-qr:live1:1", "fake-qr:live1:2")
        assert second["id"] > first["id"]
        # Resuming from the first QR replays the second from the log.
        again = await EventStreamReader.open(service.port, f"/events?after={first['id']}&types=session.qr")
        assert (await again.event("session.qr")) == second
    for r in (refused, reader, again):
        await r.stream.aclose()


async def test_a_client_that_goes_away_frees_its_place(service_factory):
    service = service_factory("[stream]\nmax_subscribers = 2\n")
    with trio.fail_after(SLACK):
        readers = [await EventStreamReader.open(service.port) for _ in range(2)]
        for reader in readers:
            await reader.block()
        full = await EventStreamReader.open(service.port)
        assert full.status == 503
        for reader in (*readers, full):
            await reader.stream.aclose()
        # The server sees each close and ends its stream: a new one gets a place again.
        while True:
            reader = await EventStreamReader.open(service.port)
            await reader.stream.aclose()
            if reader.status == 200:
                break
            assert reader.status == 503
            await trio.sleep(0.05)


GRACE = 8.0


@pytest.mark.slow
async def test_sigterm_ends_open_streams_well_within_the_grace(service_factory):
    service = service_factory(f"[server]\nshutdown_grace = {GRACE}\n")
    with trio.fail_after(SLACK):
        readers = [await EventStreamReader.open(service.port) for _ in range(3)]
        for reader in readers:
            await reader.block()
        started = time.monotonic()
        code = await trio.to_thread.run_sync(service.stop, SLACK)
        elapsed = time.monotonic() - started
        for reader in readers:
            (bye,) = await reader.rest()  # then the last chunk: a clean end, not a cut connection
            assert "shutting down" in bye[""][0]
    assert code == 0, service.log_tail()
    # Without the stop signal each stream would hold hypercorn's drain for the whole grace.
    assert elapsed < GRACE / 2, f"shutdown took {elapsed:.1f} s with open streams\n{service.log_tail()}"
    print(f"SIGTERM with 3 open streams: exited in {elapsed:.2f} s (grace {GRACE:g} s)")
