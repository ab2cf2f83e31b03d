"""End-to-end: the real neonize (patched copy, in a subprocess) against the simulator."""

from __future__ import annotations

import base64

import pytest
import trio

from tests.simulator.clients import RawClient
from tests.simulator.conftest import StartClient
from tests.wasim import QrData, Simulator

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

PHONE = "15550001111"
CONTACT = "15559998888"


async def pair(sim: Simulator, client: RawClient, phone: str = PHONE) -> None:
    """Scan the client's first QR code as ``phone`` and wait until it is connected."""
    qr = await client.wait("qr")
    sim.scan_qr(qr["qr"], phone)
    await client.wait("connected")
    await sim.wait_connected(phone)


async def test_qr_pairing_then_connected(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    qr = await client.wait("qr")
    pending = await sim.wait_pairing()
    data = QrData.parse(qr["qr"])
    assert data.ref == pending.refs[0]
    assert base64.b64encode(data.noise_pub).decode() == pending.noise_key_b64

    sim.scan_qr(qr["qr"], PHONE)
    status = await client.wait("pair_status")
    assert status["data"]["Status"] == "SUCCESS"
    assert status["data"]["ID"]["User"] == PHONE
    await client.wait("connected")
    await sim.wait_connected(PHONE)
    assert sim.phone_state(PHONE)["logins"] == 1
    assert not client.named("disconnected")


async def test_send_text_is_decrypted(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await pair(sim, client)

    result = await client.send_text(CONTACT, "hello from neonize")
    assert result["event"] == "send_result", result
    message = await sim.wait_message(to=CONTACT)
    assert message.id == result["id"]
    assert message.text == "hello from neonize"
    assert message.own_copy_text == "hello from neonize"
    assert message.from_phone == PHONE

    # A second message reuses the session (still a pkmsg: the contact never answered).
    second = await client.send_text(CONTACT, "second")
    assert second["event"] == "send_result"
    assert (await sim.wait_message(to=CONTACT, text="second")).id == second["id"]


async def test_message_between_two_paired_phones(sim: Simulator, start_client: StartClient) -> None:
    """The recipient is a paired phone: its companion device gets a copy encrypted to the keys it
    uploaded, and the simulator reads the copy for the recipient's phone."""
    alice = await start_client("alice")
    await pair(sim, alice, "15550001111")
    bob = await start_client("bob")
    await pair(sim, bob, "15550002222")

    result = await alice.send_text("15550002222", "hi bob")
    assert result["event"] == "send_result", result
    message = await sim.wait_message(to="15550002222", text="hi bob")
    assert message.from_phone == "15550001111"
    assert message.error is None


async def test_restart_with_same_db_logs_in_without_qr(sim: Simulator, start_client: StartClient) -> None:
    first = await start_client("a")
    await pair(sim, first)
    await first.exit()
    await sim.wait_disconnected(PHONE)

    second = await start_client("a")
    await second.wait("connected")
    await sim.wait_connected(PHONE)
    assert not second.named("qr")
    assert sim.phone_state(PHONE)["logins"] == 2


async def test_503_disconnects_and_reconnects(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await pair(sim, client)
    mark = len(client.events)

    assert sim.stream_error(PHONE, code=503) == 1
    await client.wait("disconnected", after=mark)
    await client.wait("connected", after=mark)
    await sim.wait_connected(PHONE)
    assert sim.phone_state(PHONE)["logins"] == 2


async def test_conflict_replaced_does_not_reconnect(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await pair(sim, client)
    mark = len(client.events)

    sim.stream_error(PHONE, conflict="replaced")
    await client.wait("stream_replaced", after=mark)
    await sim.wait_disconnected(PHONE)
    await trio.sleep(5)
    assert sim.phone_state(PHONE)["logins"] == 1
    assert not client.named("connected", after=mark)


async def test_device_removed_logs_out(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await pair(sim, client)
    mark = len(client.events)

    sim.stream_error(PHONE, code=401, conflict="device_removed")
    logged_out = await client.wait("logged_out", after=mark)
    assert not logged_out["data"].get("OnConnect", False)
    await sim.wait_disconnected(PHONE)
    await trio.sleep(3)
    assert sim.phone_state(PHONE)["logins"] == 1
    assert sim.phone_state(PHONE)["devices"] == []


async def test_login_failure_logs_out(sim: Simulator, start_client: StartClient) -> None:
    first = await start_client("a")
    await pair(sim, first)
    await first.exit()
    await sim.wait_disconnected(PHONE)

    sim.fail_next_login(PHONE, "401")
    second = await start_client("a")
    logged_out = await second.wait("logged_out")
    assert logged_out["data"]["OnConnect"] is True
    assert sim.phone_state(PHONE)["failed_logins"] == 1
