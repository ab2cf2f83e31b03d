"""A device's stored credentials: whatsmeow's SQLite file in the session folder. No neonize here.

Used on both sides: the API process asks whether a device is paired, and the worker checks a
database before handing it to Go (goneonize panics, and so ends the whole worker, on a database
it cannot open or read).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import trio

DB_NAME = "whatsmeow.db"
_SUFFIXES = ("", "-wal", "-shm", "-journal")
# Disk work of many sessions at once (a restore) must not take every trio worker thread.
_limiter = trio.CapacityLimiter(8)


class CorruptDatabase(Exception):
    """The device database exists but SQLite cannot read it; the message says why."""


def db_path(directory: Path) -> Path:
    return directory / DB_NAME


def _open(db: Path) -> sqlite3.Connection:
    """Never creates the file, and writes only to roll back a transaction a killed process left in
    it (its journal is "hot"): read-only, SQLite refuses ("attempt to write a readonly database"),
    and a device whose worker was SIGKILLed mid-write would look corrupt and unpaired for good.
    That rollback is what Go's own open would do first."""
    return sqlite3.connect(f"file:{db}?mode=rw", uri=True)


def check_database(db: Path) -> None:
    """Raise CorruptDatabase unless `db` is absent (a new device) or a readable SQLite file."""
    if not db.exists():
        return
    # The header, the schema and the device row: what Go reads before it can fail politely. Not
    # `PRAGMA quick_check`: it reads every page of a ~25 MB file, which doubled a restore of 1,000.
    try:
        with contextlib.closing(_open(db)) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "whatsmeow_device" in tables:
                conn.execute("SELECT * FROM whatsmeow_device LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise CorruptDatabase(f"{db.name} cannot be read: {exc}") from None


def is_paired(directory: Path) -> bool:
    db = db_path(directory)
    if not db.exists():
        return False
    try:
        with contextlib.closing(_open(db)) as conn:
            return conn.execute("SELECT COUNT(*) FROM whatsmeow_device").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def forget(directory: Path) -> None:
    for suffix in _SUFFIXES:
        (directory / (DB_NAME + suffix)).unlink(missing_ok=True)


async def has_credentials(directory: Path) -> bool:
    return await trio.to_thread.run_sync(is_paired, directory, limiter=_limiter)


async def forget_credentials(directory: Path) -> None:
    await trio.to_thread.run_sync(forget, directory, limiter=_limiter)
