"""The supervisor on the fake engine, with trio's autojump clock for exact backoff timing."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from waservice.engine import QrCode
from waservice.engine.fake import FakeEngine
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager
from waservice.store import open_store


async def wait_state(session, state: str, timeout: float = 5) -> None:
    with trio.fail_after(timeout):
        while session.machine.state.value != state:
            await trio.sleep(0.001)


async def pair(manager: SessionManager, engine: FakeEngine, session_id: str, phone: str):
    """/connect, wait for the QR, let the fake phone scan it, wait until connected."""
    session = await manager.connect(session_id)
    await wait_state(session, "qr_ready")
    engine.clients[session_id].scan(phone)
    await wait_state(session, "connected")
    return session


async def test_backoff_delays_and_failed(manager: SessionManager, engine: FakeEngine, autojump_clock):
    session = await pair(manager, engine, "s1", "15550001111")
    engine.refuse_connections = True

    starts: list[float] = []
    runs_before = engine.clients["s1"].runs
    t0 = trio.current_time()
    engine.clients["s1"].fail("stream error 503")
    while session.machine.state.value != "failed":
        runs = engine.clients["s1"].runs
        await trio.sleep(0.001)
        if engine.clients["s1"].runs != runs:
            starts.append(trio.current_time() - t0)
    gaps = [round(b - a) for a, b in zip([0.0, *starts], starts, strict=False)]
    assert gaps == [3, 6, 12, 24, 30]
    assert engine.clients["s1"].runs - runs_before == 5
    assert session.info().reconnect_attempts == 5
    assert "gave up after 5" in session.info().last_error

    await trio.sleep(600)  # nothing retries by itself once failed
    assert engine.clients["s1"].runs - runs_before == 5

    engine.refuse_connections = False
    manager.reset_reconnect("s1")
    await wait_state(session, "connected")
    assert session.info().reconnect_attempts == 0


async def test_success_resets_counter(manager: SessionManager, engine: FakeEngine, autojump_clock):
    session = await pair(manager, engine, "s1", "1555")
    engine.clients["s1"].fail()
    await wait_state(session, "error")
    assert session.info().reconnect_attempts == 1
    await wait_state(session, "connected", timeout=10)
    assert session.info().reconnect_attempts == 0
    engine.clients["s1"].fail()
    await wait_state(session, "error")  # events reach the supervisor through its channel
    t0 = trio.current_time()
    await wait_state(session, "error")
    await wait_state(session, "connected", timeout=10)
    assert round(trio.current_time() - t0) == 3  # the first delay again, not the second


async def test_logged_out_and_replaced_do_not_retry(manager, engine: FakeEngine, autojump_clock):
    session = await pair(manager, engine, "s1", "1555")
    client = engine.clients["s1"]
    client.log_out_from_phone()
    await wait_state(session, "disconnected")
    runs = client.runs
    await trio.sleep(300)
    assert client.runs == runs and session.info().phone_number is None
    assert not await engine.has_credentials(session.session_id, session.directory)
    assert "logged out" in session.info().last_error

    await pair(manager, engine, "s1", "1666")  # a fresh QR, no delete/recreate needed
    client.replace()
    await wait_state(session, "disconnected")
    runs = client.runs
    await trio.sleep(300)
    assert client.runs == runs
    assert "replaced" in session.info().last_error
    assert await engine.has_credentials(session.session_id, session.directory)  # replaced keeps the device


async def test_qr_expiry_goes_disconnected(manager, engine: FakeEngine, autojump_clock):
    session = await manager.connect("s1")
    await wait_state(session, "qr_ready")
    engine.clients["s1"].expire_qr()
    await wait_state(session, "disconnected")
    assert "expired" in session.info().last_error and not session.info().has_qr
    await manager.connect("s1")
    await wait_state(session, "qr_ready")


async def test_connect_and_disconnect_are_idempotent(manager, engine: FakeEngine):
    session = await manager.connect("s1")
    await manager.connect("s1")
    await wait_state(session, "qr_ready")
    assert engine.clients["s1"].runs == 1
    await manager.disconnect("s1")
    await manager.disconnect("s1")
    assert session.info().state == "disconnected"
    assert not engine.clients["s1"].running


async def test_restart_restores_sessions(tmp_path: Path):
    data = tmp_path / "data"

    async def run_manager(body) -> None:
        engine = FakeEngine()
        async with open_store(data) as store, trio.open_nursery() as nursery:
            manager = await nursery.start(SessionManager(engine, store, ReconnectPolicy()).run)
            await body(manager, engine)
            nursery.cancel_scope.cancel()

    async def first(manager: SessionManager, engine: FakeEngine) -> None:
        for sid in ("paired", "unpaired", "stopped"):
            session = await manager.connect(sid)
            await wait_state(session, "qr_ready")
        engine.clients["paired"].scan("1555")
        engine.clients["stopped"].scan("1666")
        await wait_state(manager.get("paired"), "connected")
        await manager.disconnect("stopped")

    async def second(manager: SessionManager, engine: FakeEngine) -> None:
        ids = [s.session_id for s in manager.sessions()]
        assert sorted(ids) == ["default", "paired", "stopped", "unpaired"]
        await wait_state(manager.get("paired"), "connected")
        assert manager.get("paired").info().phone_number == "1555"
        await trio.sleep(0.05)
        assert manager.get("unpaired").info().state == "disconnected"  # waits for /connect
        assert manager.get("stopped").info().state == "disconnected"  # the user stopped it
        assert "stopped" not in engine.clients or not engine.clients["stopped"].running

    await run_manager(first)
    await run_manager(second)


async def test_delete_removes_folder(manager: SessionManager, engine: FakeEngine):
    session = await pair(manager, engine, "gone", "1555")
    assert session.directory.exists()
    await manager.delete("gone")
    assert not session.directory.exists()
    assert "gone" not in [s.session_id for s in manager.sessions()]


async def test_delete_forgets_the_device_where_the_engine_keeps_it(
    manager: SessionManager, engine: FakeEngine, monkeypatch
):
    """A shared device store (PostgreSQL) is not in the folder: the engine is asked, even when the
    logout failed (the account's keys would stay behind otherwise), before the store forgets it."""
    session = await pair(manager, engine, "gone", "1555")
    engine.fail_logouts = True
    forgotten = []
    forget = engine.forget_credentials

    async def recording(session_id: str, directory: Path) -> None:
        stored = [s.id for s in await manager.store.list()]
        forgotten.append((session_id, directory, session_id in stored))
        await forget(session_id, directory)

    monkeypatch.setattr(engine, "forget_credentials", recording)
    result = await manager.delete("gone")
    assert result.unlinked is False
    assert forgotten == [("gone", session.directory, True)]


async def test_unknown_and_illegal_events_are_logged_and_ignored(manager, engine: FakeEngine, caplog):
    session = await pair(manager, engine, "s1", "1555")
    client = engine.clients["s1"]
    client.emit(object())  # an event this supervisor does not know (e.g. a newer engine's message)
    client.emit(QrCode("late"))  # a QR while connected: an engine bug
    client.emit(None)
    client.scan("1555")  # events after them still arrive
    client.fail("after the odd ones")
    await wait_state(session, "error")
    assert "after the odd ones" in session.info().last_error
    messages = [r.getMessage() for r in caplog.records]
    assert any("unknown engine event" in m for m in messages)
    assert any("qr is not allowed in state connected" in m for m in messages)


async def test_a_bug_in_event_handling_costs_one_event_not_the_service(manager, engine, monkeypatch):
    session = await pair(manager, engine, "s1", "1555")

    def broken(self, event):
        raise KeyError("bug")

    monkeypatch.setattr(type(session), "_dispatch", broken)
    engine.clients["s1"].fail()
    await trio.testing.wait_all_tasks_blocked()
    monkeypatch.undo()
    assert session.info().state in ("connected", "error", "connecting")  # the service lives on
    await manager.disconnect("s1")
    await manager.connect("s1")
    await wait_state(session, "connected")


async def test_stop_stops_every_session_at_once(manager: SessionManager, engine: FakeEngine, autojump_clock):
    sessions = [await manager.connect(f"s{n}") for n in range(300)]
    for session in sessions:
        await session.wait_for(lambda s: s.value == "qr_ready")
    engine.stop_delay = 2.0  # each client takes 2 s to disconnect cleanly
    t0 = trio.current_time()
    await manager.stop(deadline=t0 + 10)
    assert trio.current_time() - t0 == pytest.approx(2.0, abs=0.5)  # not 300 x 2 s
    assert not any(client.running for client in engine.clients.values())


async def test_an_unreadable_device_fails_its_own_session_at_restore(tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    engine = FakeEngine()

    async def broken_probe(session_id: str, directory: Path) -> bool:
        if directory.name == "bad":
            raise OSError("database disk image is malformed")
        return await FakeEngine.has_credentials(engine, session_id, directory)

    async with open_store(data) as store:
        await store.add("bad")
        await store.add("good")
    (data / "good" / "fake-device.json").write_text('{"phone": "1555"}')
    monkeypatch.setattr(engine, "has_credentials", broken_probe)
    async with open_store(data) as store, trio.open_nursery() as nursery:
        manager = await nursery.start(SessionManager(engine, store, ReconnectPolicy()).run)
        await wait_state(manager.get("good"), "connected")
        assert manager.get("bad").info().state in ("connecting", "qr_ready")  # tried, not crashed
        nursery.cancel_scope.cancel()
