"""Linking a real neonize client with a pairing code (``PairPhone``): the simulator plays the phone
on which the code is typed, and the client connects as that phone without a QR scan."""

from __future__ import annotations

import pytest
import trio

from tests.simulator.conftest import StartClient
from tests.simulator.test_wasim_control import control_call
from tests.wasim import Simulator, SimulatorError
from tests.wasim.control import serve_control

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

PHONE = "15550003333"


async def test_pair_code_links_the_client(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await client.wait("qr")  # the websocket is up: now PairPhone may be called
    answer = await client.pair_phone(f"+{PHONE}")
    assert answer["event"] == "pair_code", answer
    code = answer["code"]
    assert len(code) == 9 and code[4] == "-"

    pending = await sim.wait_pair_code_request(PHONE)
    assert pending.phone == PHONE
    assert pending.platform_display == "Chrome (Linux)"  # as facts-events.md measured
    assert [p.connection_id for p in sim.pending_pair_codes()] == [pending.connection_id]

    await sim.enter_pair_code(PHONE, code)
    status = await client.wait("pair_status")
    assert status["data"]["Status"] == "SUCCESS", status
    assert status["data"]["ID"]["User"] == PHONE
    await client.wait("connected")
    await sim.wait_connected(PHONE)
    assert sim.events("code_paired") and not sim.events("scanned")
    assert not sim.pending_pair_codes()

    # A linked device like any other: it sends, and the phone's copy decrypts.
    sent = await client.send_text("15557770000", "linked by code")
    assert sent["event"] == "send_result", sent
    assert (await sim.wait_message(id=sent["id"])).text == "linked by code"


async def test_a_wrong_code_does_not_link(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await client.wait("qr")
    answer = await client.pair_phone(PHONE)
    assert answer["event"] == "pair_code", answer
    await sim.wait_pair_code_request(PHONE)
    wrong = "AAAA-AAAA" if answer["code"] != "AAAA-AAAA" else "BBBB-BBBB"

    with pytest.raises(SimulatorError, match="wrong code"):
        await sim.enter_pair_code(PHONE, wrong)
    assert not sim.accounts[PHONE].companions
    assert not client.named("pair_status")
    with pytest.raises(SimulatorError):
        await sim.enter_pair_code("15550009999", answer["code"])  # nobody waits for that phone


async def test_pair_code_over_the_control_api(
    sim: Simulator, start_client: StartClient, nursery: trio.Nursery
) -> None:
    port = await nursery.start(serve_control, sim, 0)
    client = await start_client("a")
    await client.wait("qr")
    answer = await client.pair_phone(PHONE)
    assert answer["event"] == "pair_code", answer
    await sim.wait_pair_code_request(PHONE)

    status, waiting = await control_call(port, "GET", "/pair-codes")
    assert status == 200 and [w["phone"] for w in waiting] == [PHONE], waiting
    status, _ = await control_call(port, "POST", "/enter-pair-code", {"phone": PHONE, "code": "1111-1111"})
    assert status == 400  # wrong code; the client still waits, and the right one then links it
    status, _ = await control_call(port, "POST", "/enter-pair-code", {"phone": PHONE, "code": answer["code"]})
    assert status == 200
    await client.wait("connected")
    await sim.wait_connected(PHONE)
