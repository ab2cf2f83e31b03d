"""The embedded device store (one node, the default): a whatsmeow SQLite file per session folder.

What credentials.py knows about those files, behind the `DeviceStore` interface. Go finds the one
account of a file by itself, so a spec is just the path, and pairing needs no bookkeeping.
"""

from __future__ import annotations

from pathlib import Path

from . import credentials
from .devices import DeviceSpec


class SqliteDevices:
    max_stale_stores = None  # a few open files each: max_leaked_fds is the budget

    async def spec(self, session_id: str, directory: Path) -> DeviceSpec:
        return DeviceSpec(db=str(credentials.db_path(directory.resolve())))

    async def has_credentials(self, session_id: str, directory: Path) -> bool:
        return await credentials.has_credentials(directory)

    async def paired(self, session_id: str, jid: str) -> None:
        """The file holds the account: nothing to remember elsewhere."""

    async def forget(self, session_id: str, directory: Path) -> None:
        await credentials.forget_credentials(directory)
