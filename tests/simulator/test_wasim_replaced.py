"""One live connection per device: a second login kicks the first, and the connection log shows it.

Wire-client tests (fast, no neonize) check the stanza, the log and the control API; one test runs the
real engine to check that whatsmeow reads the stanza as ``StreamReplaced``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import trio
import trio_websocket

from tests.simulator.engine_harness import Device, pair, pool_on
from tests.simulator.test_wasim_protocol import login_wire_client, pair_wire_client
from tests.wasim import CLOSE_DELAY, Simulator, open_simulator
from tests.wasim.client import DeviceKeys, WireClient
from tests.wasim.codec import Node
from tests.wasim.connlog import ConnectionLog
from tests.wasim.control import serve_control
from waservice.engine import Connected, Replaced

pytestmark = [pytest.mark.simulator]

PHONE = "15550001111"
# Generous on a loaded box: the kick's overlap is CLOSE_DELAY plus a close handshake, never seconds.
KICK_SLACK = 2.0


async def wait_closed(client: WireClient, timeout: float = 10) -> list[str]:
    """Read until the server closes the socket; returns the tags received meanwhile."""
    tags: list[str] = []
    with trio.fail_after(timeout):
        try:
            while True:
                tags.append((await client.receive()).tag)
        except trio_websocket.ConnectionClosed:  # the server hung up, which is what we wait for
            return tags


async def next_with_tag(client: WireClient, tag: str, timeout: float = 10) -> Node:
    """The next node with this tag (the server also sends ``ib`` and other nodes after a login)."""
    with trio.fail_after(timeout):
        while (node := await client.receive()).tag != tag:
            pass
        return node


@pytest.mark.trio
async def test_second_login_replaces_the_first(nursery: trio.Nursery) -> None:
    async with open_simulator(0) as sim:
        keys = DeviceKeys()
        await pair_wire_client(sim, nursery, keys, PHONE)
        first = await login_wire_client(sim, nursery, keys)
        await sim.wait_connected(PHONE, timeout=5)
        first_conn = sim.phone_connections(PHONE)[0].id

        second = await login_wire_client(sim, nursery, keys)
        stanza = await next_with_tag(first, "stream:error")
        # What WhatsApp sends: no code, a conflict child of type "replaced" (whatsmeow keys on that).
        assert stanza.tag == "stream:error" and "code" not in stanza.attrs
        assert [(c.tag, c.attr("type")) for c in stanza.children] == [("conflict", "replaced")]
        assert "stream:error" not in await wait_closed(first)
        await sim.wait_for(lambda: all(i.closed_at for i in sim.connection_intervals(PHONE)[:1]), 5)

        (replaced,) = sim.events("replaced")
        assert replaced["conn"] == first_conn and replaced["phone"] == PHONE and replaced["device"] == 7
        # The newer connection is the device's one connection, and it stays up.
        (live,) = sim.phone_connections(PHONE)
        assert live.id == replaced["by"] != first_conn
        await sim.wait_connected(PHONE, timeout=5)
        assert (await second.iq("w:p", "get")).attr("type") == "result"

        old, new = sim.connection_intervals(PHONE)
        assert (old.conn, old.replaced_by, new.conn, new.closed_at) == (first_conn, live.id, live.id, None)
        assert old.closed_at is not None and old.replaced_at is not None
        (overlap,) = sim.connection_overlaps(PHONE)
        assert overlap.kick and not overlap.open
        assert (overlap.first, overlap.second) == (first_conn, live.id)
        assert CLOSE_DELAY * 0.9 <= overlap.duration <= CLOSE_DELAY + KICK_SLACK


@pytest.mark.trio
async def test_other_devices_and_pairing_are_not_kicked(nursery: trio.Nursery) -> None:
    async with open_simulator(0) as sim:
        one, two = DeviceKeys(), DeviceKeys()
        await pair_wire_client(sim, nursery, one, PHONE)
        await pair_wire_client(sim, nursery, two, PHONE)  # a second companion of the same phone
        assert one.device_id != two.device_id
        await login_wire_client(sim, nursery, one)
        await login_wire_client(sim, nursery, two)
        await sim.wait_for(lambda: len(sim.phone_connections(PHONE)) == 2, 5)
        assert sim.events("replaced") == [] and sim.connection_overlaps() == []


def test_overlap_without_a_kick_is_reported_as_one() -> None:
    """Two clients of one device both connected, neither kicked: the failure failover tests look for."""
    log = ConnectionLog()
    log.logged_in(1, PHONE, 7, at=10.0)
    log.logged_in(2, PHONE, 7, at=12.0)
    log.logged_in(3, PHONE, 8, at=12.5)  # another device: never an overlap with 1 or 2
    log.closed(1, at=15.0)
    (overlap,) = log.overlaps(now=20.0)
    assert (overlap.first, overlap.second, overlap.kick, overlap.open) == (1, 2, False, False)
    assert overlap.duration == 3.0
    log.logged_in(4, PHONE, 7, at=21.0)
    log.replaced(2, by=4, at=21.0)
    later = log.overlaps(now=21.25)[-1]
    assert (later.first, later.second, later.kick, later.open, later.duration) == (2, 4, True, True, 0.25)
    log.logged_in(5, PHONE, 7, at=30.0)  # after 2 and 4 closed: no overlap
    log.closed(2, at=21.5)
    log.closed(4, at=29.0)
    assert len(log.overlaps(now=40.0)) == 2
    assert [i.conn for i in log.intervals(PHONE, 7)] == [1, 2, 4, 5]


@pytest.mark.trio
async def test_connection_log_over_the_control_api(nursery: trio.Nursery) -> None:
    async with open_simulator(0) as sim:
        port = await nursery.start(serve_control, sim, 0)

        async def get(path: str) -> dict[str, object]:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(f"GET {path} HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode())
            response = b""
            while chunk := await stream.receive_some(65536):
                response += chunk
            head, _, payload = response.partition(b"\r\n\r\n")
            assert head.split()[1] == b"200", head
            body = json.loads(payload)
            assert isinstance(body, dict)
            return body

        keys = DeviceKeys()
        await pair_wire_client(sim, nursery, keys, PHONE)
        first = await login_wire_client(sim, nursery, keys)
        await login_wire_client(sim, nursery, keys)
        await wait_closed(first)
        await sim.wait_for(lambda: sim.connection_intervals(PHONE)[0].closed_at, 5)

        log = await get(f"/connections?phone=%2B{PHONE}")
        assert log["close_delay"] == CLOSE_DELAY and isinstance(log["now"], float)
        old, new = log["intervals"]  # type: ignore[misc]
        assert old["phone"] == PHONE and old["device"] == 7 and old["replaced_by"] == new["conn"]
        assert old["closed_at"] >= old["logged_in_at"] and new["closed_at"] is None
        (overlap,) = log["overlaps"]  # type: ignore[misc]
        assert overlap["kick"] is True and overlap["duration"] <= CLOSE_DELAY + KICK_SLACK
        assert (overlap["first"], overlap["second"]) == (old["conn"], new["conn"])
        everyone = await get("/connections")
        assert everyone["intervals"] == log["intervals"]
        assert (await get("/connections?phone=15559990000"))["intervals"] == []


@pytest.mark.trio
async def test_engine_sees_stream_replaced(sim: Simulator, patched_dir: Path, tmp_path: Path) -> None:
    """Two engine sessions on copies of one device's keys: the newer login kicks the older, whose
    engine reports ``Replaced`` and does not reconnect (so the newer stays the device's connection)."""
    async with pool_on(patched_dir) as pool, trio.open_nursery() as nursery:
        original = Device(pool, "first", tmp_path / "first")
        await nursery.start(original.run)
        await pair(sim, original, PHONE)
        original.reconnect = False
        original.stop()  # Go saves and closes the database, so it can be copied whole
        await original.done.wait()
        await sim.wait_disconnected(PHONE)
        shutil.copytree(tmp_path / "first", tmp_path / "second")

        first = Device(pool, "first", tmp_path / "first")
        await nursery.start(first.run)
        await first.wait(Connected)
        await sim.wait_connected(PHONE)
        second = Device(pool, "second", tmp_path / "second")
        await nursery.start(second.run)
        await second.wait(Connected)

        replaced = await first.wait(Replaced)
        assert isinstance(replaced, Replaced) and "connection replaced" in replaced.reason
        (kick,) = sim.events("replaced")
        await sim.wait_for(lambda: len(sim.connection_intervals(PHONE)) >= 3, 5)
        intervals = sim.connection_intervals(PHONE)
        kicked = next(i for i in intervals if i.conn == kick["conn"])
        await sim.wait_for(lambda: kicked.closed_at is not None, 10)
        assert kicked.replaced_by == kick["by"] == intervals[-1].conn
        assert [o.kick for o in sim.connection_overlaps(PHONE)] == [True]
        # whatsmeow does not reconnect after StreamReplaced: the newer login stays alone.
        with trio.move_on_after(3):
            await sim.wait_event("login", after=len(sim.history), phone=PHONE)
            pytest.fail("the replaced client logged in again")
        (live,) = sim.phone_connections(PHONE)
        assert live.id == kick["by"]
        nursery.cancel_scope.cancel()
