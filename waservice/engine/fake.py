"""A scripted WhatsApp engine for fast tests of the supervisor, the API and the web page.

Unpaired devices show QR codes `fake-qr:<session>:<n>`; `scan()` pairs them. Pairing is stored in
`<session dir>/fake-device.json`, so a restarted service reconnects without a QR, like whatsmeow.
The script methods (scan, fail, ...) are plain calls for tests; the running connection forwards
what they script to the supervisor's channel in order, as a real engine would. Activity (incoming,
receipt, typing, report) goes to the engine's activity sink, as the real engine's does, and only
while the client is connected.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import get_args

import attrs
import msgspec
import trio

from ..events import model as m
from ..events import types as t
from ..events.model import Activity, ActivitySink
from .base import (
    Connected,
    ConnectionLost,
    EngineError,
    EngineEvent,
    EventSender,
    LoggedOut,
    Paired,
    QrCode,
    Replaced,
    SentMessage,
    Stopped,
)
from .content import Attachment, Content, Downloaded, Media, NumberCheck, Text, TypingState

DEVICE_FILE = "fake-device.json"
SENT_KEPT = 1000
_ids = itertools.count(1)
log = logging.getLogger("waservice.engine.fake")


@attrs.frozen
class RecordedMessage:
    to: str  # the chat's user part: the phone number of a 1:1 chat
    text: str | None  # the text of a Text, else None
    id: str
    chat: str = ""  # the JID sent to
    content: Content | None = None
    media_sha256: str | None = None  # a Media's bytes, read from its spool file at send time
    media_size: int | None = None


@attrs.define(eq=False)
class _PendingSend:
    message: RecordedMessage
    acked: trio.Event = attrs.Factory(trio.Event)
    error: str | None = None
    abandoned: bool = False  # the caller stopped waiting


class _End:
    """Script marker: the connection ends here."""


class FakeClient:
    def __init__(self, engine: FakeEngine, session_id: str, directory: Path) -> None:
        self.engine = engine
        self.session_id = session_id
        self.directory = directory
        self.sent: deque[RecordedMessage] = deque(maxlen=SENT_KEPT)  # bounded: benchmarks send a lot
        self.runs = 0  # how many times run() was entered: counts connection attempts
        self.logouts = 0
        self.downloads = 0
        self._qr_serial = 0
        self._script: trio.MemorySendChannel[EngineEvent | _End] | None = None
        self._wire: trio.Nursery | None = None  # sends waiting for their ack live here
        self._pending: set[_PendingSend] = set()
        self.reads: list[tuple[str, str, list[str]]] = []  # (chat, sender, ids) per mark_read
        self.typing_states: list[tuple[str, str]] = []  # (chat, state) per set_typing
        self.pair_codes: list[str] = []  # the phone numbers pairing codes were asked for

    # -- Client interface -------------------------------------------------------------------

    async def run(self, events: EventSender) -> None:
        self.runs += 1
        await trio.sleep(0)
        if self.engine.refuse_connections:
            raise EngineError("connection refused (fake engine)")
        script, scripted = trio.open_memory_channel[EngineEvent | _End](math.inf)
        self._script = script
        try:
            async with trio.open_nursery() as wire:
                self._wire = wire
                phone = self.engine.paired_phone(self.directory)
                if phone:
                    self._send(Connected(phone))
                else:
                    self.rotate_qr()
                async for item in scripted:
                    if isinstance(item, _End):
                        break
                    await events.send(item)
                wire.cancel_scope.cancel()  # acks still due die with the connection
        finally:
            if self.engine.stop_delay:  # a clean disconnect takes time, even when cancelled
                with trio.CancelScope(shield=True):
                    await trio.sleep(self.engine.stop_delay)
            self._script = self._wire = None
            for pending in self._pending:
                pending.error = "connection closed before WhatsApp acknowledged the message"
                pending.acked.set()
            self._pending.clear()

    async def send(self, chat: str, content: Content) -> SentMessage:
        await trio.sleep(0)
        if self._wire is None:
            raise EngineError("not connected")
        if self.engine.fail_sends:
            raise EngineError("server did not acknowledge the message (fake engine)")
        if chat.split("@")[0] in self.engine.not_on_whatsapp:  # whatsmeow's words for it
            raise EngineError(f"failed to send: no LID found for {chat} from server")
        text = content.text if isinstance(content, Text) else None
        digest = size = None
        if isinstance(content, Media):  # read now: the API deletes the spool file after the send
            data = await trio.Path(content.path).read_bytes()
            digest, size = hashlib.sha256(data).hexdigest(), len(data)
        message = RecordedMessage(
            to=chat.split("@")[0],
            text=text,
            id=f"FAKE{next(_ids):012d}",
            chat=chat,
            content=content,
            media_sha256=digest,
            media_size=size,
        )
        if self.engine.ack_delay:
            await self._wait_for_ack(message)
        else:
            self.sent.append(message)
        return SentMessage(id=message.id, timestamp=int(time.time()), to=chat)

    async def _wait_for_ack(self, message: RecordedMessage) -> None:
        pending = _PendingSend(message)
        self._pending.add(pending)
        assert self._wire is not None
        self._wire.start_soon(self._ack_later, pending, self.engine.ack_delay)
        try:
            await pending.acked.wait()
        finally:
            pending.abandoned = not pending.acked.is_set()
        if pending.error:
            raise EngineError(pending.error)

    async def _ack_later(self, pending: _PendingSend, delay: float) -> None:
        await trio.sleep(delay)
        self._pending.discard(pending)
        self.sent.append(pending.message)
        if pending.abandoned:
            log.warning(
                "session=%s late ack for message %s: delivered after the sender stopped waiting",
                self.session_id,
                pending.message.id,
            )
        pending.acked.set()

    async def check_numbers(self, numbers: list[str]) -> list[NumberCheck]:
        await trio.sleep(0)
        self._require_connection()
        found = [(n, n not in self.engine.not_on_whatsapp) for n in numbers]
        return [NumberCheck(number=n, on_whatsapp=on, jid=_jid(n) if on else None) for n, on in found]

    async def pair_code(self, phone: str) -> str:
        await trio.sleep(0)
        self._require_connection()
        if self._qr_serial == 0:
            raise EngineError("no QR code is showing (fake engine)")
        self.pair_codes.append(phone)
        return f"FAKE-{len(self.pair_codes):04d}"

    async def mark_read(self, chat: str, sender: str, message_ids: list[str]) -> None:
        await trio.sleep(0)
        self._require_connection()
        self.reads.append((chat, sender, list(message_ids)))

    async def set_typing(self, chat: str, state: TypingState) -> None:
        await trio.sleep(0)
        self._require_connection()
        if state not in get_args(TypingState):  # the real engine would crash
            raise AssertionError(f"typing state {state!r} reached the engine")
        self.typing_states.append((chat, state))

    async def download(self, attachment: Attachment, path: str) -> Downloaded:
        """The fake's attachment *is* the file: `incoming(..., attachment=bytes)` sent it."""
        self._require_connection()
        if self.engine.fail_downloads:
            raise EngineError("media download failed: 404 from the media host (fake engine)")
        await trio.Path(path).write_bytes(attachment.message)
        self.downloads += 1
        return Downloaded(path=path, size=len(attachment.message))

    def _require_connection(self) -> None:
        if self._wire is None:
            raise EngineError("not connected")

    async def logout(self) -> None:
        await trio.sleep(self.engine.logout_delay)
        if self._script is None:
            raise EngineError("not connected")
        if self.engine.fail_logouts:
            raise EngineError("WhatsApp refused the logout (fake engine)")
        self.logouts += 1
        await self.engine.forget_credentials(self.session_id, self.directory)
        self._end()

    async def close(self) -> None:
        self._end()

    # -- script (what WhatsApp or the phone would do) ---------------------------------------

    @property
    def pending_sends(self) -> int:
        """Sends waiting for their acknowledgement."""
        return len(self._pending)

    @property
    def running(self) -> bool:
        return self._script is not None

    @property
    def qr_codes_shown(self) -> int:
        return self._qr_serial

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
        (self.directory / DEVICE_FILE).unlink(missing_ok=True)
        self._send(LoggedOut("logged out from the phone (device removed)"))
        self._end()

    def replace(self) -> None:
        self._send(Replaced("connection replaced: the account was opened by another client"))
        self._end()

    def expire_qr(self) -> None:
        self._send(Stopped("QR code expired without being scanned"))
        self._end()

    def emit(self, event: object) -> None:
        """Report any event, even one the supervisor does not know (tests of its default case)."""
        self._send(event)  # type: ignore[arg-type]

    # -- activity (what contacts do), into the engine's sink ---------------------------------

    async def incoming(
        self,
        sender: str,
        text: str | None = None,
        *,
        message_id: str | None = None,
        push_name: str | None = None,
        group: str | None = None,
        from_me: bool = False,
        kind: t.Kind = "text",
        quoted_message_id: str | None = None,
        attachment: bytes | None = None,
        mimetype: str | None = None,
    ) -> Activity:
        """A message from `sender` (a phone number), in their chat or in `group` (a group id).

        `attachment`: a media message's file (GET /media serves it back through `download`)."""
        chat, chat_jid = (f"{group}@g.us", f"{group}@g.us") if group else (sender, _jid(sender))
        data = t.MessageReceived(
            message_id=message_id or f"FAKEIN{next(_ids):012d}",
            chat=chat,
            chat_jid=chat_jid,
            from_=sender,
            from_jid=_jid(sender),
            from_me=from_me,
            is_group=group is not None,
            push_name=push_name,
            kind=kind,
            text=text,
            quoted_message_id=quoted_message_id,
            media=None
            if attachment is None
            else t.Media(
                mimetype=mimetype, size=len(attachment), sha256=hashlib.sha256(attachment).hexdigest()
            ),
        )
        return await self.report(m.MESSAGE_RECEIVED, data, key=data.message_id, attachment=attachment)

    async def receipt(
        self, message_id: str, status: t.AckStatus = "delivered", sender: str | None = None
    ) -> Activity:
        """`sender` (by default the one it was sent to) acknowledges a message this client sent."""
        to = next((s.to for s in self.sent if s.id == message_id), None)
        sender = sender or to or "15550009999"
        chat = to or sender
        now = time.time()
        data = t.MessageAck(
            message_id=message_id,
            chat=chat,
            chat_jid=_jid(chat),
            from_=sender,
            from_jid=_jid(sender),
            status=status,
            timestamp=m.iso_utc(now),
        )
        return await self.report(m.MESSAGE_ACK, data, key=f"{message_id}:{status}:{sender}", timestamp=now)

    async def typing(
        self, sender: str, state: t.TypingState = "composing", group: str | None = None
    ) -> Activity:
        chat, chat_jid = (f"{group}@g.us", f"{group}@g.us") if group else (sender, _jid(sender))
        data = t.ChatTyping(
            chat=chat,
            chat_jid=chat_jid,
            from_=sender,
            from_jid=_jid(sender),
            is_group=group is not None,
            state=state,
        )
        return await self.report(m.CHAT_TYPING, data)

    async def report(
        self,
        type: str,
        data: msgspec.Struct,
        key: str | None = None,
        timestamp: float | None = None,
        attachment: bytes | None = None,
    ) -> Activity:
        """Any activity (a reaction, an edit, a call...), its data one of events/types.py's Structs."""
        if self._script is None:
            raise RuntimeError(f"fake client {self.session_id!r} is not running")
        now = time.time()
        activity = Activity(
            session_id=self.session_id,
            type=type,
            timestamp=now if timestamp is None else timestamp,
            data=msgspec.to_builtins(data),
            key=key,
            received=now,
            attachment=attachment,
        )
        await self.engine.activity.send(activity)
        return activity

    def _send(self, event: EngineEvent) -> None:
        if self._script is None:
            raise RuntimeError(f"fake client {self.session_id!r} is not running")
        self._script.send_nowait(event)

    def _end(self) -> None:
        if self._script is not None:
            self._script.send_nowait(_End())


def _jid(phone: str) -> str:
    return f"{phone}@s.whatsapp.net"


class FakeEngine:
    name = "fake"

    def __init__(self, activity: ActivitySink | None = None) -> None:
        """Without a sink (unit tests of other parts), activity is kept in `activity_log`."""
        self.activity_log: trio.MemoryReceiveChannel[Activity] | None = None
        if activity is None:
            activity, self.activity_log = trio.open_memory_channel[Activity](math.inf)
        self.activity = activity
        self.clients: dict[str, FakeClient] = {}
        self.refuse_connections = False
        self.fail_sends = False
        self.ack_delay = 0.0  # seconds before WhatsApp acknowledges a send (0: at once)
        self.logout_delay = 0.0  # seconds a logout takes
        self.fail_logouts = False
        self.stop_delay = 0.0  # seconds a connection takes to stop cleanly
        self.not_on_whatsapp: set[str] = set()  # numbers a number check answers false for
        self.fail_downloads = False

    def client(self, session_id: str, directory: Path) -> FakeClient:
        client = FakeClient(self, session_id, directory)
        self.clients[session_id] = client
        return client

    def paired_phone(self, directory: Path) -> str | None:
        try:
            return json.loads((directory / DEVICE_FILE).read_text())["phone"]
        except (OSError, ValueError, KeyError):
            return None

    async def has_credentials(self, session_id: str, directory: Path) -> bool:
        await trio.sleep(0)
        return self.paired_phone(directory) is not None

    async def forget_credentials(self, session_id: str, directory: Path) -> None:
        await trio.sleep(0)
        (directory / DEVICE_FILE).unlink(missing_ok=True)
