"""Downloaded media, cached on disk: a second GET /media of the same message costs no download.

One directory (`<data_dir>/.media-cache/`) for every session, bounded in total size and in age;
the oldest files go first. A file is downloaded under a temporary name and renamed into place
only once complete, so a reader never sees half a file; one download per message at a time.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
import trio

CACHE_DIR = ".media-cache"
PARTIAL = ".part"


@attrs.frozen
class CachedFile:
    """Opened before any eviction can run: eviction may unlink it, the open file still reads."""

    file: trio.abc.AsyncResource
    size: int

    async def chunks(self, size: int = 256 * 1024) -> AsyncIterator[bytes]:
        try:
            while chunk := await self.file.read(size):  # type: ignore[attr-defined]
                yield chunk
        finally:
            with trio.CancelScope(shield=True):
                await self.file.aclose()


class MediaCache:
    def __init__(self, data_dir: Path, max_bytes: int, max_age: float) -> None:
        self.directory = data_dir / CACHE_DIR
        self.max_bytes = max_bytes
        self.max_age = max_age  # seconds
        self._downloading: dict[str, trio.Lock] = {}
        self._prepared = False
        self._preparing = trio.Lock()  # the first download clears leftovers; the others wait

    def key(self, session_id: str, message_id: str) -> str:
        return hashlib.sha256(f"{session_id}\0{message_id}".encode()).hexdigest()

    async def get_or_fetch(self, key: str, download: Callable[[Path], Awaitable[None]]) -> CachedFile:
        """The cached file for `key`, or `download(temporary path)` it first (its errors pass)."""
        lock = self._downloading.setdefault(key, trio.Lock())
        try:
            async with lock:
                found = await trio.to_thread.run_sync(self._fresh, key)
                if found is not None:
                    return found
                cached: CachedFile | None = None
                async with self._preparing:
                    if not self._prepared:
                        await trio.to_thread.run_sync(self._prepare)
                        self._prepared = True
                partial = await trio.to_thread.run_sync(self._partial_path, key)
                try:
                    await download(partial)
                    await trio.to_thread.run_sync(self._commit, partial, key)
                    cached = await trio.to_thread.run_sync(self._fresh, key)
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(lambda: partial.unlink(missing_ok=True))
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._downloading.pop(key, None)
        await trio.to_thread.run_sync(self.evict)
        if cached is None:
            raise OSError("the downloaded file vanished from the media cache")
        return cached

    def _final(self, key: str) -> Path:
        return self.directory / key

    def _fresh(self, key: str) -> CachedFile | None:
        try:
            stat = self._final(key).stat()
        except FileNotFoundError:
            return None
        if time.time() - stat.st_mtime > self.max_age:
            return None
        try:
            file = trio.wrap_file(open(self._final(key), "rb"))  # noqa: SIM115  # closed by chunks()
        except FileNotFoundError:  # evicted meanwhile
            return None
        return CachedFile(file, stat.st_size)

    def _prepare(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in self.directory.glob(f"*{PARTIAL}"):  # a crash's: never complete
            leftover.unlink(missing_ok=True)

    def _partial_path(self, key: str) -> Path:
        path = self.directory / f"{key}.{secrets.token_hex(4)}{PARTIAL}"
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return path

    def _commit(self, partial: Path, key: str) -> None:
        os.chmod(partial, 0o600)  # the engine may have replaced the file
        os.replace(partial, self._final(key))

    def evict(self) -> int:
        """Delete files older than max_age, then the oldest until the rest fit max_bytes."""
        now = time.time()
        files: list[tuple[float, int, Path]] = []
        for path in self.directory.iterdir():
            if path.name.endswith(PARTIAL):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        files.sort()
        total = sum(size for _, size, _ in files)
        removed = 0
        for mtime, size, path in files:
            if now - mtime <= self.max_age and total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)  # a reader that has it open keeps reading it
            total -= size
            removed += 1
        return removed
