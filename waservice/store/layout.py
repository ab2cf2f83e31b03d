"""The disk layout of the data directory (blocking; called from worker threads through SessionStore).

<data_dir>/waservice.db     the registry (registry.py)
<data_dir>/<session_id>/    one folder per session, owned by the engine (device keys)
<data_dir>/.trash/          folders of deleted sessions on their way out ('.' is never in an id)
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

from ..ids import validate_session_id

__all__ = ["DiskLayout"]

REGISTRY_FILE = "waservice.db"
TRASH = ".trash"


class DiskLayout:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.registry = data_dir / REGISTRY_FILE
        self._trash = data_dir / TRASH

    def prepare(self) -> list[str]:
        """Create the data directory; finish deletions a previous run could not. Returns errors."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return _rmtree(self._trash) if self._trash.exists() else []

    def directory(self, session_id: str) -> Path:
        return self.data_dir / validate_session_id(session_id)

    def create(self, session_id: str) -> None:
        self.directory(session_id).mkdir(exist_ok=True)

    def move_to_trash(self, session_id: str) -> Path | None:
        """Take the folder away from its id in one rename, so the id is free at once; None if absent."""
        source = self.directory(session_id)
        target = self._trash / f"{session_id}-{uuid.uuid4().hex[:8]}"
        self._trash.mkdir(exist_ok=True)
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return None
        return target

    def restore_from_trash(self, session_id: str, trashed: Path) -> None:
        os.rename(trashed, self.directory(session_id))

    def purge(self, trashed: Path) -> list[str]:
        """Delete a trashed folder; returns what could not be deleted (retried at the next start)."""
        return _rmtree(trashed)


def _rmtree(path: Path) -> list[str]:
    errors: list[str] = []

    def note(_function: object, failed: str, exc: BaseException) -> None:
        errors.append(f"{failed}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}")

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=note)
    else:
        shutil.rmtree(path, onerror=lambda function, failed, info: note(function, failed, info[1]))
    return errors
