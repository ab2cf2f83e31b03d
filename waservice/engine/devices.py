"""Where each session's WhatsApp device (whatsmeow's keys) is stored, as the engine sees it.

One node (the default): a SQLite file in the session's folder, one account per file. Several nodes:
one PostgreSQL database shared by every session of every node (facts-scale.md section 2), so a
node that takes a session over finds its keys; an account there is found by its JID, which the
session registry keeps, and a new one is paired as a new device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import attrs


@attrs.frozen
class DeviceSpec:
    """What a worker needs to open one session's device."""

    db: str  # the SQLite file's path, or the PostgreSQL URL (goneonize picks by the prefix)
    jid: str | None = None  # the account to log in as ("<user>:<device>@s.whatsapp.net"); PostgreSQL
    new_device: bool = False  # pair a new account (PostgreSQL: never "the first device in the store")


def is_postgres(db: str) -> bool:
    """Whether goneonize opens `db` as PostgreSQL (its own test: the name's prefix), not SQLite."""
    return db.startswith("postgres")


class DeviceStore(Protocol):
    # goneonize opens a store (a SQLite file, or a PostgreSQL connection pool) per connection attempt
    # and never closes it: how many of those a worker may keep before the pool replaces it (None:
    # only its open files count, max_leaked_fds).
    max_stale_stores: int | None

    async def spec(self, session_id: str, directory: Path) -> DeviceSpec:
        """How to open the session's device now (its account if it has one, else a new device).

        Never hands out a JID the store has no device for: goneonize would crash the worker."""
        ...

    async def has_credentials(self, session_id: str, directory: Path) -> bool:
        """Whether the session has a paired device (logs in without a QR)."""
        ...

    async def paired(self, session_id: str, jid: str) -> None:
        """The session's device was just paired as account `jid`: remember it for the next start."""
        ...

    async def forget(self, session_id: str, directory: Path) -> None:
        """Remove the session's device and its keys (after a logout, or on delete); raises OSError."""
        ...
