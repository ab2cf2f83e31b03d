"""Spool files: media on its way to WhatsApp, written once, read by the engine, then deleted.

They live in `<data_dir>/.spool/` ('.' is never in a session id), mode 0600, under random names.
A file is deleted after its send whatever the outcome; whatever a crash left is deleted at start.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

import trio

from ..errors import MediaTooLarge, StorageFailed

SPOOL_DIR = ".spool"
HEAD_BYTES = 64  # kept from the start of each file: enough to recognise its format


class Spool:
    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / SPOOL_DIR
        self._cleared = False
        self._clearing = trio.Lock()  # the first create clears, and every other one waits for it

    async def create(self, max_bytes: int) -> SpoolFile:
        """A new empty file that refuses to grow past `max_bytes`."""
        try:
            async with self._clearing:
                if not self._cleared:  # leftovers of a crash: nothing can still be reading them
                    await trio.to_thread.run_sync(shutil.rmtree, self.directory, True)
                    self._cleared = True
            path = await trio.to_thread.run_sync(self._create)
        except OSError as exc:
            raise StorageFailed(f"cannot create a spool file for the media: {exc}") from None
        return SpoolFile(path, max_bytes)

    def _create(self) -> Path:
        self.directory.mkdir(mode=0o700, exist_ok=True)
        path = self.directory / secrets.token_hex(16)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return path


class SpoolFile:
    """Written chunk by chunk as the media streams in; counts, hashes and keeps the head."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0
        self.head = b""
        self._sha256 = hashlib.sha256()
        self._file: trio.abc.AsyncResource | None = None

    async def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise MediaTooLarge(too_large(self.max_bytes))
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        self._sha256.update(chunk)
        if self._file is None:
            self._file = await trio.open_file(self.path, "wb")
        await self._file.write(chunk)  # type: ignore[attr-defined]

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    async def finish(self) -> None:
        """Close the file (flushed: the engine reads it from another process)."""
        if self._file is not None:
            await self._file.aclose()
            self._file = None

    async def delete(self) -> None:
        with trio.CancelScope(shield=True):  # a cancelled send must still remove its file
            await self.finish()
            await trio.to_thread.run_sync(lambda: self.path.unlink(missing_ok=True))


def too_large(max_bytes: int) -> str:
    return f"media is larger than the limit of {max_bytes} bytes (media.max_bytes)"
