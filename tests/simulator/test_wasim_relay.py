"""Two real neonize clients, each paired to its own phone, talking through the simulator's relay."""

from __future__ import annotations

import pytest

from tests.simulator.conftest import StartClient
from tests.simulator.test_neonize_e2e import pair
from tests.wasim import Simulator

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

ALICE = "15550001111"
BOB = "15550002222"


async def test_messages_receipts_and_typing_between_two_devices(
    sim: Simulator, start_client: StartClient
) -> None:
    alice = await start_client("alice")
    await pair(sim, alice, ALICE)
    bob = await start_client("bob")
    await pair(sim, bob, BOB)
    alice_lid, bob_lid = sim.contact(ALICE).lid, sim.contact(BOB).lid

    sent = await alice.send_text(BOB, "hi bob")
    assert sent["event"] == "send_result", sent
    got = (await bob.wait("message", where=lambda e: e["data"]["Info"]["ID"] == sent["id"]))["data"]
    assert got["Message"]["extendedTextMessage"]["text"] == "hi bob"  # neonize sends extended text
    source = got["Info"]["MessageSource"]
    assert (source["Sender"]["User"], source["Sender"]["Device"]) == (alice_lid, 7)
    assert source["SenderAlt"]["User"] == ALICE
    assert not source.get("IsFromMe", False)

    # Bob's device receipted it: the simulator saw it, and Alice's device gets a delivery receipt.
    assert (await sim.wait_acked(BOB, sent["id"])).attempts == 1
    delivered = (await alice.wait("receipt", where=lambda e: sent["id"] in e["data"]["MessageIDs"]))["data"]
    assert delivered.get("Type", "DELIVERED") == "DELIVERED"
    assert delivered["MessageSource"]["Sender"]["User"] == bob_lid

    mark = len(alice.events)
    await bob.command(cmd="mark_read", ids=[sent["id"]], chat=source["Chat"], sender=source["Sender"])
    read = (await alice.wait("receipt", after=mark, where=lambda e: e["data"].get("Type") == "READ"))["data"]
    assert read["MessageIDs"] == [sent["id"]]

    await alice.command(cmd="chat_presence", to=BOB, state="composing", media="text")
    typing = (await bob.wait("chat_presence"))["data"]
    assert typing["State"] == "COMPOSING"
    assert typing["MessageSource"]["Chat"]["User"] == alice_lid

    # Bob answers over the session Alice's message opened (a "msg", not a "pkmsg", for her device).
    answer = await bob.send_text(ALICE, "hi alice")
    assert answer["event"] == "send_result", answer
    back = (await alice.wait("message", where=lambda e: e["data"]["Info"]["ID"] == answer["id"]))["data"]
    assert back["Message"]["extendedTextMessage"]["text"] == "hi alice"
    assert not alice.named("undecryptable") and not bob.named("undecryptable")


async def test_is_on_whatsapp_answers_known_numbers_with_their_lid(
    sim: Simulator, start_client: StartClient
) -> None:
    alice = await start_client("alice")
    await pair(sim, alice, ALICE)
    known = sim.contact("15557770000")

    await alice.command(cmd="is_on_whatsapp", numbers=["15557770000", "15550009999"])
    results = {r["Query"]: r for r in (await alice.wait("is_on_whatsapp"))["results"]}
    assert results["15557770000"]["IsIn"] is True
    assert results["15557770000"]["JID"]["User"] == known.lid
    assert results["15557770000"]["JID"]["Server"] == "lid"
    assert not results["15550009999"].get("IsIn", False)
    assert "15550009999" not in sim.accounts


async def test_relayed_message_waits_for_an_offline_device(sim: Simulator, start_client: StartClient) -> None:
    alice = await start_client("alice")
    await pair(sim, alice, ALICE)
    bob = await start_client("bob")
    await pair(sim, bob, BOB)
    await bob.exit()
    await sim.wait_disconnected(BOB)

    sent = await alice.send_text(BOB, "while you were out")
    assert sent["event"] == "send_result", sent
    back = await start_client("bob")
    got = await back.wait("message", where=lambda e: e["data"]["Info"]["ID"] == sent["id"])
    assert got["data"]["Message"]["extendedTextMessage"]["text"] == "while you were out"
    assert (await sim.wait_acked(BOB, sent["id"])).attempts == 1
    await back.wait("offline_completed")
    assert len(back.named("message")) == 1
