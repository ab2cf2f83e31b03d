"""The device database check, after a process died in the middle of writing it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from waservice.engine.credentials import check_database, db_path, is_paired

# A writer killed mid-transaction (os._exit: no rollback, like SIGKILL) in SQLite's default journal
# mode, as whatsmeow (go-sqlite3) writes: the pages it spilled are in the file, the journal beside it.
_DIE_WRITING = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size = 1")
conn.execute("BEGIN IMMEDIATE")
for i in range(2000):
    conn.execute("INSERT INTO whatsmeow_message_secrets VALUES (?, ?)", (i, os.urandom(200)))
os._exit(9)
"""


def killed_while_writing(directory: Path) -> Path:
    db = db_path(directory)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE whatsmeow_device (jid TEXT)")
        conn.execute("CREATE TABLE whatsmeow_message_secrets (id INTEGER, secret BLOB)")
        conn.execute("INSERT INTO whatsmeow_device VALUES ('15550001111.0:7@s.whatsapp.net')")
    conn.close()
    subprocess.run([sys.executable, "-c", _DIE_WRITING, str(db)], check=False)
    assert (directory / "whatsmeow.db-journal").stat().st_size > 0  # a hot journal was left behind
    return db


def test_a_hot_journal_left_by_a_killed_writer_is_not_a_corrupt_database(tmp_path: Path) -> None:
    db = killed_while_writing(tmp_path)
    check_database(db)  # SQLite rolls the journal back, as Go would on opening it
    assert is_paired(tmp_path)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM whatsmeow_message_secrets").fetchone() == (0,)
    conn.close()


def test_a_hot_journal_does_not_make_a_device_look_unpaired(tmp_path: Path) -> None:
    killed_while_writing(tmp_path)
    assert is_paired(tmp_path)  # the API process asks first, after the whole service was killed
