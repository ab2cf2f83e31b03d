"""Media arriving with a request, into a spool file: base64 in JSON, or a multipart/form-data
upload streamed part by part (the file part is never held in memory, and the cap stops the read
as soon as it is passed)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterable

import attrs
from werkzeug.datastructures import Headers
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from ..errors import InvalidRequest, MediaTooLarge
from .spool import SpoolFile, too_large

FILE_PART = "file"
MAX_FIELD_BYTES = 64 * 1024  # a caption is at most ~65k UTF-16 units; other fields are short
MAX_PARTS = 32
_DATA_URL = re.compile(r"data:(?P<mimetype>[^;,]{1,255})?(?:;[^,]*)?;base64,", re.IGNORECASE)
_BASE64_CHUNK = 4 * 256 * 1024  # characters decoded at a time (a multiple of 4)


def base64_size_limit(max_bytes: int) -> int:
    """Characters of base64 that can hold `max_bytes` (plus a data: URL prefix)."""
    return 4 * ((max_bytes + 2) // 3) + 512


async def write_base64(data: str, spool: SpoolFile) -> str | None:
    """Decode `data` (plain base64, or a data: URL) into the spool; returns a data: URL's mimetype."""
    mimetype = None
    if match := _DATA_URL.match(data):
        mimetype = match["mimetype"]
        data = data[match.end() :]
    data = "".join(data.split())  # line breaks of MIME-style base64
    if len(data) > base64_size_limit(spool.max_bytes):
        raise MediaTooLarge(too_large(spool.max_bytes))
    if not data:
        raise InvalidRequest("data is empty: it must be the file's bytes in base64")
    for start in range(0, len(data), _BASE64_CHUNK):
        try:
            chunk = base64.b64decode(data[start : start + _BASE64_CHUNK], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("data is not valid base64 (standard alphabet, with padding)") from None
        await spool.write(chunk)
    await spool.finish()
    return mimetype


@attrs.define
class Upload:
    fields: dict[str, str]
    file_name: str | None = None  # the file part's own filename
    content_type: str | None = None  # the file part's Content-Type
    has_file: bool = False


def boundary_of(content_type: str) -> bytes:
    _, options = parse_options_header(content_type)
    boundary = options.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise InvalidRequest("multipart/form-data needs a boundary parameter in its Content-Type")
    return boundary.encode("latin-1", "replace")


async def read_multipart(body: AsyncIterable[bytes], boundary: bytes, spool: SpoolFile) -> Upload:
    """Stream the parts: the `file` part into `spool`, the others (short text) into `fields`."""
    decoder = MultipartDecoder(boundary, max_parts=MAX_PARTS)
    upload = Upload(fields={})
    reader = _PartReader(upload, spool)
    chunks = aiter(body)
    while True:
        chunk = await anext(chunks, None)  # None: the body has ended
        try:
            decoder.receive_data(chunk)
            event = decoder.next_event()
            while not isinstance(event, NeedData | Epilogue):
                await reader.take(event)
                event = decoder.next_event()
        except ValueError as exc:  # werkzeug's parse errors, and too many parts
            raise InvalidRequest(f"malformed multipart/form-data body: {exc}") from None
        if isinstance(event, Epilogue):
            break
        if chunk is None:
            raise InvalidRequest("malformed multipart/form-data body: it ends before its last boundary")
    await spool.finish()
    return upload


class _PartReader:
    def __init__(self, upload: Upload, spool: SpoolFile) -> None:
        self._upload = upload
        self._spool = spool
        self._name: str | None = None
        self._into_file = False
        self._field = bytearray()

    async def take(self, event: object) -> None:
        match event:
            case File(name=name, filename=filename, headers=headers) if name == FILE_PART:
                self._start(name)
                if self._upload.has_file:
                    raise InvalidRequest("more than one 'file' part")
                self._into_file = True
                self._upload.has_file = True
                self._upload.file_name = filename or None
                self._upload.content_type = _content_type(headers)
            case Field(name=name) | File(name=name):
                self._start(name)
                if name == FILE_PART:
                    raise InvalidRequest("the 'file' part must be a file (with a filename)")
                if name in self._upload.fields:
                    raise InvalidRequest(f"the field '{name}' is given twice")
            case Data(data=data, more_data=more):
                await self._data(data, more)

    def _start(self, name: str) -> None:
        self._name = name
        self._into_file = False
        self._field.clear()

    async def _data(self, data: bytes, more: bool) -> None:
        if self._into_file:
            await self._spool.write(data)
            return
        self._field.extend(data)
        if len(self._field) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"the field '{self._name}' is longer than {MAX_FIELD_BYTES} bytes")
        if not more and self._name is not None:
            try:
                self._upload.fields[self._name] = self._field.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(f"the field '{self._name}' is not valid UTF-8") from None


def _content_type(headers: Headers) -> str | None:
    value = headers.get("content-type")
    return value.strip() if value and value.strip().lower() != "application/octet-stream" else None
