"""The session a multipart upload names in a body part, found without holding the upload in memory.

POST /send-media takes a form whose `session_id` is one of its parts, usually before the file. To
know where to forward it, the leading parts are read until the `session_id` part ends; everything
read is kept, to be sent on (or handed back to the local route) before the rest of the stream.
What was read stays in memory up to IN_MEMORY bytes, then goes to a spool file: when the part
comes after the file, the file is read through to find it, bounded by the route's own cap
(media.max_bytes plus the other parts). A body that does not parse names nothing here: the route
itself answers with its error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from ..media.intake import MAX_FIELD_BYTES, MAX_PARTS
from ..media.spool import Spool, SpoolFile

SESSION_PART = "session_id"
IN_MEMORY = 256 * 1024
READ_BACK_CHUNK = 256 * 1024
# Room for the form's other parts (and their headers) beside the file, as the route allows them.
FORM_OVERHEAD = MAX_PARTS * (MAX_FIELD_BYTES + 1024)


class ReadAhead:
    """The bytes of a body read so far: in memory, then (past IN_MEMORY) in a spool file."""

    def __init__(self, spool: Spool, max_bytes: int) -> None:
        self._spool = spool
        self._max_bytes = max_bytes
        self._memory: list[bytes] = []
        self._in_memory = 0
        self.file: SpoolFile | None = None

    async def keep(self, chunk: bytes) -> None:
        if self.file is None and self._in_memory + len(chunk) <= IN_MEMORY:
            self._memory.append(chunk)
            self._in_memory += len(chunk)
            return
        if self.file is None:
            self.file = await self._spool.create(self._max_bytes)
            for kept in self._memory:
                await self.file.write(kept)
            self._memory.clear()
        await self.file.write(chunk)  # MediaTooLarge past the cap: a 413, as from the route

    async def chunks(self) -> AsyncIterator[bytes]:
        """What was kept, in order (once)."""
        for chunk in self._memory:
            yield chunk
        if self.file is not None:
            await self.file.finish()
            async with await trio.open_file(self.file.path, "rb") as kept:
                while chunk := await kept.read(READ_BACK_CHUNK):
                    yield chunk

    async def delete(self) -> None:
        if self.file is not None:
            await self.file.delete()


class PrefixedBody:
    """A request body as a route reads it (iterated or awaited): the bytes read ahead, then the rest."""

    def __init__(self, ahead: ReadAhead, rest: Any) -> None:
        self._kept: AsyncIterator[bytes] | None = ahead.chunks()
        self._rest = rest

    def __aiter__(self) -> PrefixedBody:
        return self

    async def __anext__(self) -> bytes:
        if self._kept is not None:
            chunk = await anext(self._kept, None)
            if chunk is not None:
                return chunk
            self._kept = None
        return await self._rest.__anext__()

    def __await__(self) -> Any:
        return self._whole().__await__()

    async def _whole(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    def __getattr__(self, name: str) -> Any:  # clear() and the like
        return getattr(self._rest, name)


async def find_form_session(body: Any, boundary: bytes, ahead: ReadAhead) -> tuple[str | None, bool]:
    """Read `body` into `ahead` until its `session_id` part is complete.

    Returns (the session id or None, whether the form was understood): (None, True) is a form
    with no such part (the route's default session); (None, False) one that did not parse."""
    decoder = MultipartDecoder(boundary, max_parts=MAX_PARTS)
    in_session_part = False
    value = bytearray()
    while True:
        chunk = await anext(body, None)  # None: the body has ended
        if chunk == b"":
            continue
        if chunk is not None:
            await ahead.keep(bytes(chunk))
        try:
            decoder.receive_data(chunk)
            event = decoder.next_event()
            while not isinstance(event, NeedData | Epilogue):
                match event:
                    case Field(name=name) | File(name=name):
                        in_session_part = name == SESSION_PART
                        value.clear()
                    case Data(data=data, more_data=more) if in_session_part:
                        value.extend(data)
                        if len(value) > MAX_FIELD_BYTES:
                            return None, False
                        if not more:
                            return value.decode("utf-8"), True
                event = decoder.next_event()
        except (ValueError, UnicodeDecodeError):  # werkzeug's parse errors, too many parts, bad UTF-8
            return None, False
        if isinstance(event, Epilogue):
            return None, True
        if chunk is None:
            return None, False  # it ends before its last boundary
