"""The supervisor on the fake engine, with trio's autojump clock for exact backoff timing."""

from __future__ import annotations

from pathlib import Path

import trio

from waservice.engine.fake import FakeEngine
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager
from waservice.store import SessionStore


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
    assert not await engine.has_credentials(session.directory)
    assert "logged out" in session.info().last_error

    await pair(manager, engine, "s1", "1666")  # a fresh QR, no delete/recreate needed
    client.replace()
    await wait_state(session, "disconnected")
    runs = client.runs
    await trio.sleep(300)
    assert client.runs == runs
    assert "replaced" in session.info().last_error
    assert await engine.has_credentials(session.directory)  # replaced keeps the device


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
        store = SessionStore(data)
        async with trio.open_nursery() as nursery:
            manager = await nursery.start(SessionManager(engine, store, ReconnectPolicy()).run)
            await body(manager, engine)
            nursery.cancel_scope.cancel()
        store.close()

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
