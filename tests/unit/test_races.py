"""The races and wrong results of issue 7, each on the fake engine, in-process, under trio."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.unit.calls import call
from waservice.api.app import create_app
from waservice.engine.fake import DEVICE_FILE, FakeEngine
from waservice.errors import UnknownSession
from waservice.sessions.machine import ReconnectPolicy, State
from waservice.sessions.manager import SessionManager
from waservice.sessions.supervisor import SEND_TIMEOUT, SessionSupervisor
from waservice.store import SessionStore, open_store


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only after 50 ms of real idleness: the store works in threads, and
    time must not jump past a deadline while a thread is busy."""
    return trio.testing.MockClock(autojump_threshold=0.05)


@asynccontextmanager
async def running(data: Path, engine: FakeEngine | None = None, **kwargs) -> AsyncIterator[SessionManager]:
    """A manager on `data`, as one run of the service; leaving it is a restart's first half."""
    engine = engine or FakeEngine()
    async with open_store(data) as store, trio.open_nursery() as nursery:
        yield await nursery.start(SessionManager(engine, store, ReconnectPolicy(), **kwargs).run)
        nursery.cancel_scope.cancel()


async def in_state(session: SessionSupervisor, *states: State) -> None:
    with trio.fail_after(30):
        await session.wait_for(lambda s: s in states)


async def pair(manager: SessionManager, session_id: str, phone: str = "1555") -> SessionSupervisor:
    session = await manager.connect(session_id)
    await in_state(session, State.QR_READY)
    manager.engine.clients[session_id].scan(phone)
    await in_state(session, State.CONNECTED)
    return session


async def stored_ids(store: SessionStore) -> set[str]:
    return {s.id for s in await store.list()}


def memory_ids(manager: SessionManager) -> set[str]:
    return {s.session_id for s in manager.sessions()}


# -- 1. DELETE racing /connect of the same id ---------------------------------------------------------


async def test_connect_during_delete_waits_then_creates_anew(tmp_path: Path, autojump_clock):
    data = tmp_path / "data"
    async with running(data) as manager:
        engine: FakeEngine = manager.engine
        await pair(manager, "s1")
        engine.logout_delay = 5  # the delete is busy unlinking when /connect arrives
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.delete, "s1")
            await trio.sleep(1)
            session = await manager.connect("s1")
        assert session is manager.get("s1")
        await in_state(session, State.QR_READY)  # a new device: the old one was unlinked
        assert (data / "s1").is_dir()
        assert await stored_ids(manager.store) == memory_ids(manager) == {"default", "s1"}
    async with running(data) as manager:
        assert memory_ids(manager) == {"default", "s1"}


# -- 2. a store error during /connect ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["registry", "folder"])
async def test_store_error_on_connect_leaves_nothing_half_registered(manager, store, client, where):
    if where == "registry":
        original, target, name = store._registry.add, store._registry, "add"
        error: Exception = sqlite3.OperationalError("database or disk is full")
    else:
        original, target, name = store._layout.create, store._layout, "create"
        error = OSError(28, "No space left on device")

    def fail_once(*args):
        setattr(target, name, original)
        raise error

    setattr(target, name, fail_once)
    status, body = await call(client, "post", "/connect", json={"session_id": "s1"})
    assert status == 503 and body["success"] is False
    assert "refused a change" in body["error"] and str(error.args[-1]) in body["error"]
    assert (await call(client, "get", "/status?session_id=s1"))[0] == 400
    assert "s1" not in memory_ids(manager) and "s1" not in await stored_ids(store)
    with trio.fail_after(5):  # the next /connect works (it used to hang forever)
        status, body = await call(client, "post", "/connect", json={"session_id": "s1"})
    assert status == 200
    await in_state(manager.get("s1"), State.QR_READY)


# -- 3. a logout from the phone, then /connect at once -------------------------------------------------


async def test_forgetting_is_bound_to_the_connection_that_logged_out(manager, engine: FakeEngine):
    session = await pair(manager, "s1", "1555")
    engine.clients["s1"].log_out_from_phone()
    await session.wait_for(lambda s: s is State.DISCONNECTED)
    await manager.connect("s1")  # at once: the old connection may still be stopping
    await in_state(session, State.QR_READY)
    engine.clients["s1"].scan("1666")
    await in_state(session, State.CONNECTED)
    await manager.disconnect("s1")
    assert engine.paired_phone(session.directory) == "1666"  # the re-paired device is kept
    await manager.connect("s1")
    await in_state(session, State.CONNECTED)


# -- 4. replaced: down across restarts, and why ------------------------------------------------------


async def test_replaced_stays_down_across_restarts_until_connect(tmp_path: Path):
    data = tmp_path / "data"
    async with running(data) as manager:
        session = await pair(manager, "s1")
        manager.engine.clients["s1"].replace()
        await in_state(session, State.DISCONNECTED)
        assert "replaced" in session.info().last_error and "POST /connect" in session.info().last_error
        await trio.testing.wait_all_tasks_blocked()  # the stored autoconnect is written by now
    async with running(data) as manager:
        session = manager.get("s1")
        await trio.testing.wait_all_tasks_blocked()
        assert session.info().state == "disconnected"
        assert "replaced" in session.info().last_error  # the reason survives the restart
        assert "s1" not in manager.engine.clients or manager.engine.clients["s1"].runs == 0
        await manager.connect("s1")  # takes the account back, and autoconnects from now on
        await in_state(session, State.CONNECTED)
    async with running(data) as manager:
        await in_state(manager.get("s1"), State.CONNECTED)
        assert manager.get("s1").info().last_error is None


# -- 5. the send deadline is real --------------------------------------------------------------------


async def test_send_deadline_is_real_and_a_late_ack_is_logged(
    client, manager, engine, autojump_clock, caplog
):
    await pair(manager, "s1")
    engine.ack_delay = 100.0
    t0 = trio.current_time()
    status, body = await call(
        client, "post", "/send", json={"session_id": "s1", "number": "12025550143", "message": "hi"}
    )
    assert trio.current_time() - t0 == pytest.approx(SEND_TIMEOUT, abs=0.5)
    assert status == 502 and "outcome is unknown" in body["error"]
    with caplog.at_level(logging.WARNING, logger="waservice.engine.fake"):
        await trio.sleep(30)
    (sent,) = engine.clients["s1"].sent
    assert any("late ack" in r.message and sent.id in r.message for r in caplog.records)


# -- 6. DELETE unlinks, reports, and is not left half-done --------------------------------------------


async def test_delete_unlinks_a_paired_session_that_is_not_connected(client, manager, engine):
    session = await pair(manager, "s1")
    await manager.disconnect("s1")
    status, body = await call(client, "delete", "/sessions/s1")
    assert status == 200 and body["unlinked"] is True and body["warning"] is None
    assert engine.clients["s1"].logouts == 1
    assert not session.directory.exists()


async def test_delete_says_when_it_could_not_unlink(client, manager, engine, autojump_clock):
    await pair(manager, "s1")
    await manager.disconnect("s1")
    engine.refuse_connections = True
    t0 = trio.current_time()
    status, body = await call(client, "delete", "/sessions/s1")
    assert status == 200 and body["success"] is True and body["unlinked"] is False
    assert "connection refused" in body["warning"] and "Linked devices" in body["warning"]
    assert trio.current_time() - t0 <= manager.unlink_timeout
    assert "s1" not in memory_ids(manager) and "s1" not in await stored_ids(manager.store)


async def test_delete_unlink_is_bounded_in_time(client, manager, engine, autojump_clock):
    await pair(manager, "s1")
    await manager.disconnect("s1")
    engine.logout_delay = 1000
    t0 = trio.current_time()
    status, body = await call(client, "delete", "/sessions/s1")
    assert status == 200 and body["unlinked"] is False and "did not answer" in body["warning"]
    assert trio.current_time() - t0 == pytest.approx(manager.unlink_timeout, abs=1)


async def test_delete_reports_files_it_could_not_delete(tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    real_unlink = os.unlink

    def refuse_device_file(path, *args, **kwargs):
        if str(path).endswith(DEVICE_FILE):
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    async with running(data) as manager:
        await pair(manager, "s1")
        manager.engine.fail_logouts = True  # keeps the device file until the folder goes
        monkeypatch.setattr(os, "unlink", refuse_device_file)
        result = await manager.delete("s1")
        monkeypatch.undo()
        assert "could not be deleted" in result.warning and "Permission denied" in result.warning
        assert not (data / "s1").exists()  # the id is free at once
        assert "s1" not in await stored_ids(manager.store)
    async with running(data) as manager:  # the next start finishes the job
        assert not [p for p in (data / ".trash").rglob("*")]
        await manager.connect("s1")
        assert manager.get("s1").info().state in ("connecting", "qr_ready")


async def test_delete_the_store_refuses_keeps_the_session(client, manager, store):
    session = await pair(manager, "s1")
    original = store._registry.remove

    def fail_once(*args):
        store._registry.remove = original
        raise sqlite3.OperationalError("disk I/O error")

    store._registry.remove = fail_once
    status, body = await call(client, "delete", "/sessions/s1")
    assert status == 503 and "disk I/O error" in body["error"]
    assert manager.get("s1") is session and session.directory.is_dir()  # all there, disconnected
    assert "s1" in await stored_ids(store)
    assert (await call(client, "delete", "/sessions/s1"))[0] == 200
    assert "s1" not in memory_ids(manager) and "s1" not in await stored_ids(store)


async def test_cancelled_delete_still_finishes(manager, engine, autojump_clock):
    session = await pair(manager, "s1")
    engine.logout_delay = 5
    with trio.move_on_after(1):  # the client goes away mid-delete
        await manager.delete("s1")
    assert "s1" in memory_ids(manager)  # still being deleted
    with trio.fail_after(30), pytest.raises(UnknownSession):
        await manager.delete("s1")  # waits for the lock the first delete holds until it is done
    assert "s1" not in memory_ids(manager) and "s1" not in await stored_ids(manager.store)
    assert not session.directory.exists()
    assert session.finished and not engine.clients["s1"].running  # its supervisor ended


# -- 7. a storm of /connect, DELETE and /disconnect through HTTP --------------------------------------


async def test_storm_of_lifecycle_requests(tmp_path: Path):
    data = tmp_path / "data"
    ids = [f"s{n}" for n in range(5)]
    rng = random.Random(7)
    statuses: list[tuple[str, int, str, bool | None]] = []

    async def one_client(client, engine: FakeEngine, requests: int) -> None:
        for _ in range(requests):
            sid = rng.choice(ids)
            fake = engine.clients.get(sid)
            if fake is not None and fake.running and rng.random() < 0.3:
                fake.scan("1555" + sid[-1])  # the phone pairs it: deletes must then unlink
            op = rng.choice(["connect", "connect", "delete", "disconnect"])
            with trio.fail_after(5):  # "no hang": each request answers within a few seconds
                if op == "connect":
                    status, body = await call(client, "post", "/connect", json={"session_id": sid})
                elif op == "delete":
                    status, body = await call(client, "delete", f"/sessions/{sid}")
                else:
                    status, body = await call(client, "post", "/disconnect", json={"session_id": sid})
            statuses.append((op, status, body.get("error", ""), body.get("unlinked")))

    async with running(data) as manager:
        client = create_app(manager).test_client()
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for _ in range(16):
                    nursery.start_soon(one_client, client, manager.engine, 50)
        before = memory_ids(manager)
        assert await stored_ids(manager.store) == before
    assert len(statuses) == 800
    unexpected = [s for s in statuses if s[1] != 200 and not (s[1] == 400 and "not found" in s[2])]
    assert unexpected == []
    assert sum(op == "delete" and bool(unlinked) for op, _, _, unlinked in statuses) > 10
    async with running(data) as manager:
        assert memory_ids(manager) == before
