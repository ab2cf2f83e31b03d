"""The API process <-> engine worker protocol: length-prefixed msgspec msgpack frames.

A frame is a 4-byte big-endian length, then one msgpack-encoded message. Messages are tagged
`msgspec.Struct`s, so a reader decodes straight into the right type. Pure: no I/O here except the
two small helpers at the bottom that read and write frames on a trio stream.
"""

from __future__ import annotations

import struct

import msgspec
import trio

from ..events.model import Activity
from .content import Attachment, Content, Downloaded, NumberCheck

MAX_FRAME = 16 * 1024 * 1024  # a message text is at most a few KiB; anything near this is a bug
_LENGTH = struct.Struct(">I")

# -- API -> worker ----------------------------------------------------------------------------


class Start(msgspec.Struct, tag=True):
    """Begin connection attempt `attempt` of `session` on the device database `db` (a SQLite path or
    a PostgreSQL URL): as account `jid` if given, else a new device if `new_device` (devices.py)."""

    session: str
    attempt: int
    db: str
    jid: str | None = None
    new_device: bool = False


class Stop(msgspec.Struct, tag=True):
    """Stop an attempt (credentials saved); the worker answers with AttemptOver."""

    session: str
    attempt: int


class Send(msgspec.Struct, tag=True):
    req: int
    session: str
    attempt: int
    chat: str  # JID
    content: Content


class CheckNumbers(msgspec.Struct, tag=True):
    req: int
    session: str
    attempt: int
    numbers: list[str]


class PairCode(msgspec.Struct, tag=True):
    req: int
    session: str
    attempt: int
    phone: str


class MarkRead(msgspec.Struct, tag=True):
    req: int
    session: str
    attempt: int
    chat: str
    sender: str
    ids: list[str]


class Typing(msgspec.Struct, tag=True):
    req: int
    session: str
    attempt: int
    chat: str
    state: str  # checked by the worker: a frame that fails to decode would end the worker


class Download(msgspec.Struct, tag=True):
    req: int
    session: str
    attempt: int
    attachment: Attachment
    path: str


class Logout(msgspec.Struct, tag=True):
    req: int
    session: str
    attempt: int


class Ping(msgspec.Struct, tag=True):
    req: int


class Shutdown(msgspec.Struct, tag=True):
    """Stop every device cleanly, then exit."""


Request = Send | CheckNumbers | PairCode | MarkRead | Typing | Download | Logout
Command = Start | Stop | Request | Ping | Shutdown

# -- worker -> API ----------------------------------------------------------------------------


class Ready(msgspec.Struct, tag=True):
    pid: int


class Qr(msgspec.Struct, tag=True):
    code: str


class Paired(msgspec.Struct, tag=True):
    phone: str
    jid: str | None = None  # the new device's full JID, as whatsmeow's store keys it


class Connected(msgspec.Struct, tag=True):
    phone: str | None


class Lost(msgspec.Struct, tag=True):
    reason: str


class LoggedOut(msgspec.Struct, tag=True):
    reason: str


class Stopped(msgspec.Struct, tag=True):
    reason: str


class Replaced(msgspec.Struct, tag=True):
    reason: str


DeviceEvent = Qr | Paired | Connected | Lost | LoggedOut | Stopped | Replaced


class Event(msgspec.Struct, tag=True):
    session: str
    attempt: int
    event: DeviceEvent


class AttemptOver(msgspec.Struct, tag=True):
    """Go's Neonize() for this attempt returned (or was stopped, or never started)."""

    session: str
    attempt: int
    reason: str


class Sent(msgspec.Struct, tag=True):
    id: str
    timestamp: int


class Reply(msgspec.Struct, tag=True):
    """The answer to a Request: `error`, or the field that request fills (none for MarkRead,
    Typing and Logout)."""

    req: int
    error: str | None = None
    sent: Sent | None = None
    checks: list[NumberCheck] | None = None
    code: str | None = None
    downloaded: Downloaded | None = None


class Pong(msgspec.Struct, tag=True):
    req: int
    devices: int  # live attempts
    abandoned: int  # stopped while showing a QR: Go still runs their QR loop and holds their db
    opened: int = 0  # Neonize() calls so far: each opened a device store Go never closes


class Happened(msgspec.Struct, tag=True):
    """Activity (a message, a receipt, typing...): sent on the worker's activity socket, written
    straight from Go's callback thread (see worker/activity.py), never through the command socket."""

    activity: Activity


Message = Command | Ready | Event | AttemptOver | Reply | Pong | Happened

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def encode(message: Message) -> bytes:
    buffer = bytearray(_LENGTH.size)
    _encoder.encode_into(message, buffer, _LENGTH.size)
    _LENGTH.pack_into(buffer, 0, len(buffer) - _LENGTH.size)
    return bytes(buffer)


class FrameDecoder:
    """Feed bytes as they arrive; take out whole messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise ProtocolError(f"frame of {length} bytes")
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            try:
                messages.append(_decoder.decode(self._buffer[_LENGTH.size : end]))
            except msgspec.DecodeError as exc:
                raise ProtocolError(str(exc)) from None
            del self._buffer[:end]
        return messages

    @property
    def pending(self) -> int:
        return len(self._buffer)


class _Batch:
    """Frames that go out in one write: queued by any number of senders, written by the first of
    them to take the stream."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.written = False
        self.error: BaseException | None = None


class FrameStream:
    """A trio stream carrying frames, written by any number of tasks. Frames queued while a write
    is under way go out together in the next one: one syscall, and one wake-up of the reading
    process, for all of them. A queued frame is written whole even if its sender is cancelled
    meanwhile: a write cut short would leave half a frame and garble the stream for everyone."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._write = trio.Lock()
        self._batch: _Batch | None = None
        self._decoder = FrameDecoder()
        self._ready: list[Message] = []

    async def send(self, *messages: Message) -> None:
        """Returns once the messages are written; BrokenResourceError if the stream broke first."""
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled sender queues nothing
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
        for message in messages:
            batch.data += encode(message)
        with trio.CancelScope(shield=True):
            async with self._write:
                if not batch.written:
                    batch.written = True
                    if self._batch is batch:
                        self._batch = None  # frames queued from now on wait for the next write
                    try:
                        await self.stream.send_all(batch.data)
                    except BaseException as exc:
                        batch.error = exc
                        raise
        if batch.error is not None:
            raise trio.BrokenResourceError(f"the frame stream broke: {batch.error!r}") from batch.error

    async def receive(self) -> Message | None:
        """The next message, or None at end of stream."""
        while not self._ready:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self._ready = self._decoder.feed(data)
        return self._ready.pop(0)
