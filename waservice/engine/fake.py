"""A scripted WhatsApp engine for fast tests of the supervisor, the API and the web page.

Unpaired devices show QR codes `fake-qr:<session>:<n>`; `scan()` pairs them. Pairing is stored in
`<session dir>/fake-device.json`, so a restarted service reconnects without a QR, like whatsmeow.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from pathlib import Path

import attrs
import trio

from .base import (
    Connected,
    ConnectionLost,
    EngineError,
    EngineEvent,
    EventSender,
    LoggedOut,
    Paired,
    QrCode,
    SentMessage,
    Stopped,
)

DEVICE_FILE = "fake-device.json"
SENT_KEPT = 1000
_ids = itertools.count(1)


@attrs.frozen
class RecordedMessage:
    to: str
    text: str
    id: str


class FakeClient:
    def __init__(self, engine: FakeEngine, session_id: str, directory: Path) -> None:
        self.engine = engine
        self.session_id = session_id
        self.directory = directory
        self.sent: deque[RecordedMessage] = deque(maxlen=SENT_KEPT)  # bounded: benchmarks send a lot
        self.runs = 0  # how many times run() was entered: counts connection attempts
        self._qr_serial = 0
        self._emit: EventSender | None = None
        self._ended = trio.Event()

    # -- Client interface -------------------------------------------------------------------

    async def run(self, emit: EventSender) -> None:
        self.runs += 1
        await trio.sleep(0)
        if self.engine.refuse_connections:
            raise EngineError("connection refused (fake engine)")
        self._emit, self._ended = emit, trio.Event()
        try:
            phone = self.engine.paired_phone(self.directory)
            if phone:
                emit.send_nowait(Connected(phone))
            else:
                self.rotate_qr()
            await self._ended.wait()
        finally:
            self._emit = None

    async def send_text(self, number: str, text: str) -> SentMessage:
        await trio.sleep(0)
        if self._emit is None:
            raise EngineError("not connected")
        if self.engine.fail_sends:
            raise EngineError("server did not acknowledge the message (fake engine)")
        message = RecordedMessage(to=number, text=text, id=f"FAKE{next(_ids):012d}")
        self.sent.append(message)
        return SentMessage(id=message.id, timestamp=int(time.time()), to=number)

    async def logout(self) -> None:
        await trio.sleep(0)
        self.engine.forget(self.directory)

    async def close(self) -> None:
        self._end()

    # -- script (what WhatsApp or the phone would do) ---------------------------------------

    @property
    def running(self) -> bool:
        return self._emit is not None

    def rotate_qr(self) -> str:
        self._qr_serial += 1
        code = f"fake-qr:{self.session_id}:{self._qr_serial}"
        self._send(QrCode(code))
        return code

    def scan(self, phone: str) -> None:
        """The phone scans the QR: store the pairing, then report paired and connected."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / DEVICE_FILE).write_text(json.dumps({"phone": phone}))
        self._send(Paired(phone))
        self._send(Connected(phone))

    def fail(self, reason: str = "stream error 503") -> None:
        """An unexpected disconnect (network loss, stream error)."""
        self._send(ConnectionLost(reason))
        self._end()

    def log_out_from_phone(self) -> None:
        self.engine.forget(self.directory)
        self._send(LoggedOut("logged out from the phone (device removed)"))
        self._end()

    def replace(self) -> None:
        self._send(Stopped("connection replaced: the account was opened by another client"))
        self._end()

    def expire_qr(self) -> None:
        self._send(Stopped("QR code expired without being scanned"))
        self._end()

    def _send(self, event: EngineEvent) -> None:
        if self._emit is None:
            raise RuntimeError(f"fake client {self.session_id!r} is not running")
        self._emit.send_nowait(event)

    def _end(self) -> None:
        self._ended.set()


class FakeEngine:
    name = "fake"

    def __init__(self) -> None:
        self.clients: dict[str, FakeClient] = {}
        self.refuse_connections = False
        self.fail_sends = False

    def client(self, session_id: str, directory: Path) -> FakeClient:
        client = FakeClient(self, session_id, directory)
        self.clients[session_id] = client
        return client

    def paired_phone(self, directory: Path) -> str | None:
        try:
            return json.loads((directory / DEVICE_FILE).read_text())["phone"]
        except (OSError, ValueError, KeyError):
            return None

    async def has_credentials(self, directory: Path) -> bool:
        return self.paired_phone(directory) is not None

    async def forget_credentials(self, directory: Path) -> None:
        self.forget(directory)

    def forget(self, directory: Path) -> None:
        (directory / DEVICE_FILE).unlink(missing_ok=True)
