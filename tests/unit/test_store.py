"""The store: registry and disk layout, worked in threads, a corrupt registry, bad rows."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest
import trio

from waservice.engine.fake import FakeEngine
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager
from waservice.store import CorruptRegistry, SessionStore, open_store


@pytest.mark.parametrize(
    "content",
    [b"this is not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
)
async def test_corrupt_registry_is_a_clear_error(tmp_path: Path, content: bytes):
    data = tmp_path / "data"
    data.mkdir()
    (data / "waservice.db").write_bytes(content)
    with pytest.raises(CorruptRegistry, match="not a readable session registry") as caught:
        async with open_store(data):
            pass
    assert str(data / "waservice.db") in str(caught.value) and "Move it aside" in str(caught.value)


async def test_rows_with_invalid_ids_are_skipped(tmp_path: Path, caplog):
    data = tmp_path / "data"
    async with open_store(data) as store:
        await store.add("good")
    db = sqlite3.connect(data / "waservice.db")
    db.executemany("INSERT INTO sessions (id, created_at) VALUES (?, 0)", [("../etc",), ("con",), ("",)])
    db.commit()
    db.close()
    with caplog.at_level(logging.WARNING, logger="waservice.store"):
        async with open_store(data) as store, trio.open_nursery() as nursery:
            manager = await nursery.start(SessionManager(FakeEngine(), store, ReconnectPolicy()).run)
            assert sorted(s.session_id for s in manager.sessions()) == ["default", "good"]
            nursery.cancel_scope.cancel()
    skipped = [r.message for r in caplog.records if "skipping stored session" in r.message]
    assert len(skipped) == 3 and any("'../etc'" in m for m in skipped)


async def test_store_work_never_runs_on_the_trio_thread(store: SessionStore, monkeypatch):
    trio_thread = threading.current_thread()
    seen: list[threading.Thread] = []
    for target in (store._registry, store._layout):
        for name in ("add", "list", "set_autoconnect", "remove", "create", "move_to_trash", "purge"):
            original = getattr(target, name, None)
            if original is None:
                continue

            def spy(*args, _original=original):
                seen.append(threading.current_thread())
                return _original(*args)

            monkeypatch.setattr(target, name, spy)
    await store.add("s1")
    await store.set_autoconnect("s1", False, "why")
    assert [(s.id, s.autoconnect, s.down_reason) for s in await store.list()] == [("s1", False, "why")]
    assert await store.remove("s1") == []
    assert len(seen) >= 6 and trio_thread not in seen


async def test_remove_is_all_or_nothing(store: SessionStore):
    await store.add("s1")
    (store.directory("s1") / "keys.db").write_text("secret")

    def refuse(*args):
        raise sqlite3.OperationalError("disk I/O error")

    store._registry.remove = refuse  # type: ignore[method-assign]
    with pytest.raises(Exception, match="disk I/O error"):
        await store.remove("s1")
    assert (store.directory("s1") / "keys.db").read_text() == "secret"  # put back
    assert [s.id for s in await store.list()] == ["s1"]


async def test_unopenable_registry_is_not_called_corrupt(tmp_path: Path):
    data = tmp_path / "data"
    (data / "waservice.db").mkdir(parents=True)  # a folder where the file should be
    with pytest.raises(OSError, match="cannot open"):
        async with open_store(data):
            pass
