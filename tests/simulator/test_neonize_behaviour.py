"""What neonize 0.5.2 (whatsmeow inside) does on its own when the server misbehaves.

These pin down observations the service's supervisor relies on; if a neonize upgrade changes any of
them, the failure message says which assumption broke.
"""

from __future__ import annotations

import pytest
import trio

from tests.simulator.conftest import StartClient
from tests.simulator.test_neonize_e2e import CONTACT, PHONE, pair
from tests.wasim import QrData, Simulator

pytestmark = [pytest.mark.simulator, pytest.mark.trio]


async def test_initial_connect_fails_fast_when_upgrade_refused(
    sim: Simulator, start_client: StartClient
) -> None:
    """connect() of a new client raises NeonizeError at once; there is no retry."""
    sim.refuse_connections(True)
    client = await start_client("a")
    error = await client.wait("connect_error", timeout=10)
    assert error["type"] == "NeonizeError"
    assert "503" in error["error"]
    await trio.sleep(3)
    assert sim.refused_connections == 1
    assert not client.named("qr")


async def test_initial_connect_of_paired_client_fails_fast_when_unreachable(
    sim: Simulator, start_client: StartClient
) -> None:
    """A paired client whose first dial fails (listener closed): connect() raises, no auto-reconnect."""
    first = await start_client("a")
    await pair(sim, first)
    await first.exit()
    await sim.wait_disconnected(PHONE)

    await sim.stop_listening()
    second = await start_client("a")
    error = await second.wait("connect_error", timeout=10)
    assert error["type"] == "NeonizeError"
    assert "connection refused" in error["error"]
    await sim.start_listening()
    await trio.sleep(3)
    assert sim.phone_state(PHONE)["logins"] == 1  # nothing retried on its own


async def test_socket_drop_reconnects_immediately(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await pair(sim, client)
    mark = len(client.events)

    history = len(sim.history)
    sim.drop(PHONE)
    await client.wait("disconnected", after=mark)
    await client.wait("connected", after=mark)
    # Immediately: whatsmeow's next delay would be 2 s. Timed from the drop to the new dial, both on
    # the simulator's clock, so that a loaded machine's slow login does not count.
    dropped = await sim.wait_event("drop", after=history)
    redial = await sim.wait_event("accepted", after=history)
    assert redial["t"] - dropped["t"] < 1.5
    assert sim.phone_state(PHONE)["logins"] == 2


async def test_unreachable_server_is_retried_with_linear_backoff(
    sim: Simulator, start_client: StartClient
) -> None:
    """After a drop with the listener closed, whatsmeow redials at +0, +2, +6 s ... (delay grows by
    2 s per failure) and comes back as soon as the server listens again."""
    client = await start_client("a")
    await pair(sim, client)
    mark = len(client.events)

    await sim.stop_listening()
    sim.drop(PHONE)
    await client.wait("disconnected", after=mark)
    await trio.sleep(3)  # attempts at +0 and +2 s fail; the next one is due at +6 s
    await sim.start_listening()
    connected = await client.wait("connected", after=mark)
    disconnected = client.named("disconnected", after=mark)[0]
    # The +6 s attempt is the one that connects; a later one would start at +12 s.
    assert 5.0 < connected["t"] - disconnected["t"] < 11.0
    assert len(client.named("disconnected", after=mark)) == 1  # failed redials emit no events


async def test_rejected_upgrade_after_drop_stops_auto_reconnect(
    sim: Simulator, start_client: StartClient
) -> None:
    """After a drop, if the redial gets an HTTP error (here 503) instead of a TCP error, whatsmeow gives
    up after that single attempt: no more dials, no event beyond the one Disconnected, and the first
    connect() call keeps blocking. In that state disconnect() blocks too, but a new connect() works."""
    client = await start_client("a")
    await pair(sim, client)
    mark = len(client.events)

    sim.refuse_connections(True)
    sim.drop(PHONE)
    await client.wait("disconnected", after=mark)
    await trio.sleep(3)
    assert sim.refused_connections == 1
    sim.refuse_connections(False)
    await trio.sleep(4)
    assert sim.phone_state(PHONE)["logins"] == 1
    assert not client.named("connected", after=mark)
    assert not client.named("connect_returned") and not client.named("connect_error")

    await client.command(cmd="disconnect")
    await trio.sleep(4)
    assert not client.named("done", after=mark), "disconnect() used to hang in this state"

    await client.command(cmd="connect")
    await client.wait("connected", after=mark)
    await sim.wait_connected(PHONE)


async def test_bot_tag_can_be_switched_off(sim: Simulator, start_client: StartClient) -> None:
    default = await start_client("a")
    await pair(sim, default, "15550001111")
    quiet = await start_client("b", env={"NEONIZE_BOT_TAG": "off"})
    await pair(sim, quiet, "15550002222")

    assert (await default.send_text(CONTACT, "with tag"))["event"] == "send_result"
    assert (await quiet.send_text(CONTACT, "without tag"))["event"] == "send_result"
    assert "bot" in (await sim.wait_message(text="with tag")).child_tags
    assert "bot" not in (await sim.wait_message(text="without tag")).child_tags


async def test_rotated_refs_produce_a_new_qr(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    first = await client.wait("qr")
    mark = len(client.events)
    assert sim.rotate_qr() == 1
    second = await client.wait("qr", after=mark)
    new_ref = QrData.parse(second["qr"]).ref
    assert new_ref != QrData.parse(first["qr"]).ref
    assert new_ref == (await sim.wait_pairing()).refs[6]  # first ref of the second batch
    sim.scan_qr(second["qr"], PHONE)
    await client.wait("connected")
