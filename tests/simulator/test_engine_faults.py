"""Faults of the real engine, seen through the running service (HTTP) against the simulator:
a flapping network, a corrupt device database, the bot tag on the wire."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from tests.simulator.service_api import CONTACT, Api, StartService
from tests.wasim import Simulator

pytestmark = [pytest.mark.simulator, pytest.mark.trio]


def worker_pids(api: Api) -> set[int]:
    """The service's engine worker processes (its children)."""
    assert api.service.proc is not None
    tasks = Path(f"/proc/{api.service.proc.pid}/task")  # trio spawns from a worker thread
    return {int(p) for task in tasks.iterdir() for p in (task / "children").read_text().split()}


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def assert_alive(api: Api) -> None:
    assert api.service.proc is not None and api.service.proc.poll() is None, api.service.log()[-3000:]


async def test_flapping_network_crashes_nothing(sim: Simulator, start_service: StartService) -> None:
    """5 paired sessions, every connection dropped 30 times (every third time ~1 s after the
    previous drop, mid-reconnect): no worker dies, all reconnect, open files stay bounded."""
    api = await start_service()
    phones = {f"f{i}": f"1555300{i:04d}" for i in range(5)}
    for sid, phone in phones.items():
        await api.pair(sim, sid, phone)
    workers = worker_pids(api)
    fds_before = {pid: open_fds(pid) for pid in workers}

    for round_ in range(30):
        for phone in phones.values():
            sim.drop(phone)
        if round_ % 3 == 2:
            await trio.sleep(1)  # the next drop hits the reconnect in progress
            continue
        with trio.fail_after(60):
            await sim.wait_for(lambda: set(phones.values()) <= set(sim.connected_phones()), timeout=60)
        assert_alive(api)

    for sid in phones:
        await api.wait_state(sid, "connected", timeout=60)
    assert_alive(api)
    assert worker_pids(api) == workers  # no worker crashed (and none needed recycling)
    assert not re.search(r"engine worker \d+ exited", api.service.log())
    fds_after = {pid: open_fds(pid) for pid in workers}
    print(f"worker open files before {fds_before}, after 30 drops of 5 sessions {fds_after}")
    # engine.max_leaked_fds (500 beyond 8 per client) would recycle a worker past this
    assert all(n <= 500 + 8 * 5 for n in fds_after.values()), fds_after
    for sid in phones:
        response = await api.post("/send", session_id=sid, number=CONTACT, message=f"{sid} survived")
        assert response.status_code == 200, response.text
        await sim.wait_message(to=CONTACT, text=f"{sid} survived")


async def test_corrupt_device_database_fails_only_its_session(
    sim: Simulator, start_service: StartService
) -> None:
    api = await start_service()
    await api.pair(sim, "good", "15553100001")
    workers = worker_pids(api)
    broken = api.service.data_dir / "broken"
    broken.mkdir(parents=True)
    (broken / "whatsmeow.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 8192)
    assert (await api.post("/connect", session_id="broken")).status_code == 200
    status = await api.wait_state("broken", "error")
    assert "whatsmeow.db" in status["last_error"], status
    assert_alive(api)
    assert worker_pids(api) == workers
    assert (await api.status("good"))["state"] == "connected"
    response = await api.post("/send", session_id="good", number=CONTACT, message="unaffected")
    assert response.status_code == 200, response.text


async def test_messages_carry_no_bot_tag(sim: Simulator, start_service: StartService) -> None:
    api = await start_service()
    await api.pair(sim, "s1", "15553200001")
    response = await api.post("/send", session_id="s1", number=CONTACT, message="from a person")
    assert response.status_code == 200, response.text
    message = await sim.wait_message(to=CONTACT, text="from a person")
    assert "bot" not in message.child_tags, message.child_tags
