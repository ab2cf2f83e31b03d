"""End to end: the real `waservice` process on the real neonize engine, against the simulator.

The service runs in a subprocess with a patched neonize copy first on its path; the simulator runs
in this test's trio loop, so every blocking call here goes through a thread or an async client.
"""

from __future__ import annotations

import base64
import contextlib
import sqlite3

import pytest
import trio

from tests.qrcodes import decode_qr_data_url
from tests.simulator.service_api import CONTACT, PHONE, PHONE2, StartService, left_and_came_back
from tests.wasim import QrData, Simulator

pytestmark = [pytest.mark.simulator, pytest.mark.trio]


async def test_qr_is_the_clients_and_rotates(sim: Simulator, start_service: StartService) -> None:
    api = await start_service()
    await api.post("/connect", session_id="s1")
    qr = await api.qr("s1")
    pending = await sim.wait_pairing()
    data = QrData.parse(qr["code"])
    assert data.ref in pending.refs
    assert base64.b64encode(data.noise_pub).decode() == pending.noise_key_b64
    assert decode_qr_data_url(qr["qr"]) == [qr["code"]]

    sim.rotate_qr()
    with trio.fail_after(20):
        while (rotated := (await api.http.get("/qr", params={"session_id": "s1"})).json())["code"] == qr[
            "code"
        ]:
            await trio.sleep(0.05)
    assert decode_qr_data_url(rotated["qr"]) == [rotated["code"]]
    assert QrData.parse(rotated["code"]).ref != data.ref


async def test_pair_send_and_reconnect_after_drop(sim: Simulator, start_service: StartService) -> None:
    api = await start_service()
    await api.pair(sim, "s1", PHONE)
    sessions = (await api.http.get("/sessions")).json()["sessions"]
    assert {"session_id": "s1", "phone_number": PHONE, "state": "connected"}.items() <= next(
        s for s in sessions if s["session_id"] == "s1"
    ).items()

    response = await api.post("/send", session_id="s1", number=CONTACT, message="hello from waservice")
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    message = await sim.wait_message(to=CONTACT, text="hello from waservice")
    assert message.id == result["id"] and message.from_phone == PHONE

    # The simulator drops the socket: the session must notice, and reconnect by itself. The log has
    # every state change, so a down time shorter than a /status poll under load is not missed.
    assert sim.drop(PHONE) == 1
    await sim.wait_for(lambda: sim.phone_state(PHONE)["logins"] == 2, timeout=30)
    with trio.fail_after(30):  # fails if the drop is never reported, or never recovered from
        while not left_and_came_back(api.service.log(), "s1", "connected"):
            await trio.sleep(0.05)
    # "connected" again only once the simulator has a live, logged-in connection for this phone.
    assert PHONE in sim.connected_phones()
    response = await api.post("/send", session_id="s1", number=CONTACT, message="after the drop")
    assert response.status_code == 200, response.text
    await sim.wait_message(to=CONTACT, text="after the drop")


async def test_backoff_until_failed_then_reset(sim: Simulator, start_service: StartService) -> None:
    api = await start_service()
    await api.pair(sim, "s1", PHONE)
    sim.refuse_connections(True)
    mark = len(sim.history)
    sim.drop(PHONE)
    dropped_at = sim.history[mark][0]
    status = await api.wait_state("s1", "failed", timeout=60)
    assert status["reconnect_attempts"] == 5 and "gave up after 5" in status["last_error"]
    # whatsmeow may redial once by itself at once (its own auto-reconnect) before the supervisor
    # stops it; the last five attempts are the supervisor's backoff, exactly the attempt limit.
    refused = [e["t"] - dropped_at for e in sim.events("refused")]
    assert len(refused) in (5, 6), refused
    # Attempts at 0.4, 1.2, 2.8, 4.8, 6.8 s: delays 0.4, 0.8, 1.6, 2, 2 (doubling, then the cap). A
    # timer never fires early; a loaded machine can only make an attempt late, so the upper bound
    # is loose and the lower one tight.
    delays = [b - a for a, b in zip([0.0, *refused[-5:]], refused[-5:], strict=False)]
    for delay, expected in zip(delays, [0.4, 0.8, 1.6, 2.0, 2.0], strict=True):
        assert expected - 0.05 <= delay <= expected + 1.5, delays
    before = sim.refused_connections
    await trio.sleep(3)
    assert sim.refused_connections == before  # nothing retries once failed
    assert (await api.status("s1"))["state"] == "failed"

    sim.refuse_connections(False)
    assert (await api.post("/reset-reconnect", session_id="s1")).status_code == 200
    status = await api.wait_state("s1", "connected")
    assert status["reconnect_attempts"] == 0 and status["last_error"] is None


async def test_logout_from_phone_then_pair_again(sim: Simulator, start_service: StartService) -> None:
    api = await start_service()
    await api.pair(sim, "s1", PHONE)
    logins = sim.phone_state(PHONE)["logins"]
    sim.stream_error(PHONE, code=401, conflict="device_removed")
    status = await api.wait_state("s1", "disconnected")
    assert status["phone_number"] is None and "logged out" in status["last_error"]
    store = api.service.data_dir / "s1" / "whatsmeow.db"
    if store.exists():  # whatsmeow deleted the device; the service may also have removed the file
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            assert db.execute("SELECT COUNT(*) FROM whatsmeow_device").fetchone()[0] == 0
    await trio.sleep(3)
    assert sim.phone_state(PHONE)["logins"] == logins  # no reconnect loop
    assert (await api.status("s1"))["state"] == "disconnected"
    assert not any(e["kind"] == "refused" for e in sim.events())

    # No delete/recreate: /connect shows a fresh QR and pairing works again.
    await api.pair(sim, "s1", PHONE)


async def test_conflict_replaced_stops(sim: Simulator, start_service: StartService) -> None:
    api = await start_service()
    await api.pair(sim, "s1", PHONE)
    logins = sim.phone_state(PHONE)["logins"]
    sim.stream_error(PHONE, conflict="replaced")
    status = await api.wait_state("s1", "disconnected")
    assert "replaced" in status["last_error"]
    await trio.sleep(3)
    assert sim.phone_state(PHONE)["logins"] == logins
    assert (await api.status("s1"))["state"] == "disconnected"


async def test_restart_restores_paired_sessions(sim: Simulator, start_service: StartService) -> None:
    api = await start_service()
    await api.pair(sim, "s1", PHONE)
    await api.pair(sim, "s2", PHONE2)
    code = await trio.to_thread.run_sync(api.service.stop)
    assert code == 0
    await sim.wait_disconnected(PHONE)

    registrations = len(sim.events("registration"))
    again = await start_service()  # a new process on the same data folder
    for sid, phone in (("s1", PHONE), ("s2", PHONE2)):
        status = await again.wait_state(sid, "connected")
        assert status["phone_number"] == phone
    assert len(sim.events("registration")) == registrations  # no QR was needed


async def test_two_phones_are_independent(sim: Simulator, start_service: StartService) -> None:
    api = await start_service()
    await api.pair(sim, "a", PHONE)
    await api.pair(sim, "b", PHONE2)
    sim.stream_error(PHONE, conflict="replaced")
    await api.wait_state("a", "disconnected")
    assert (await api.status("b"))["state"] == "connected"
    response = await api.post("/send", session_id="b", number=CONTACT, message="still here")
    assert response.status_code == 200, response.text
    await sim.wait_message(to=CONTACT, text="still here")


async def test_churn_30_sessions(sim: Simulator, start_service: StartService) -> None:
    """30 sessions pairing, sending, disconnecting and reconnecting at once: the Go bridge hazard.

    The process must survive, and every message the API accepted with 2xx must have reached the
    simulator, decrypted to the text that was sent.
    """
    api = await start_service()
    accepted: list[tuple[str, str, str]] = []  # (message id, recipient, text)
    rounds = 3

    async def worker(i: int) -> None:
        sid, phone, contact = f"churn{i}", f"1555100{i:04d}", f"1202555{i:04d}"
        await api.pair(sim, sid, phone)
        for r in range(rounds):
            for m in range(2):
                text = f"{sid} round {r} message {m}"
                response = await api.post("/send", session_id=sid, number=contact, message=text)
                if response.status_code == 200:
                    accepted.append((response.json()["result"]["id"], contact, text))
                else:  # a refusal is allowed; a 2xx that never arrives is not
                    assert response.status_code in (400, 502), response.text
            assert (await api.post("/disconnect", session_id=sid)).status_code == 200
            assert (await api.post("/connect", session_id=sid)).status_code == 200
            await api.wait_state(sid, "connected", timeout=60)

    with trio.fail_after(240):
        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(worker, i)
    assert api.service.proc is not None and api.service.proc.poll() is None, api.service.log()[-3000:]
    assert (await api.http.get("/health")).status_code == 200
    assert len(accepted) >= 30 * rounds  # most sends were accepted
    received = {(m.id, m.to, m.text) for m in sim.messages}
    missing = [a for a in accepted if a not in received]
    assert not missing, f"{len(missing)} accepted messages never arrived: {missing[:5]}"


async def test_crash_loses_nothing(sim: Simulator, start_service: StartService) -> None:
    """A Go fatal error kills the process without warning; SIGKILL is the same for the data."""
    api = await start_service()
    await api.pair(sim, "s1", PHONE)
    response = await api.post("/send", session_id="s1", number=CONTACT, message="before the crash")
    assert response.status_code == 200
    assert api.service.proc is not None
    api.service.proc.kill()
    await trio.to_thread.run_sync(api.service.proc.wait)
    await sim.wait_disconnected(PHONE)

    registrations = len(sim.events("registration"))
    again = await start_service()  # what systemd's Restart=on-failure does
    status = await again.wait_state("s1", "connected")
    assert status["phone_number"] == PHONE
    assert len(sim.events("registration")) == registrations  # no new QR
    response = await again.post("/send", session_id="s1", number=CONTACT, message="after the crash")
    assert response.status_code == 200, response.text
    await sim.wait_message(to=CONTACT, text="after the crash")
