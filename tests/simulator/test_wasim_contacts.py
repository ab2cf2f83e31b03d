"""Simulated contacts writing to a real neonize device: messages of every kind, receipts, typing,
presence, calls, and the offline queue."""

from __future__ import annotations

import pytest

from tests.simulator.clients import RawClient
from tests.simulator.conftest import StartClient
from tests.simulator.test_neonize_e2e import PHONE, pair
from tests.wasim import Simulator, waproto
from tests.wasim.keys import KeyPair
from tests.wasim.signal_rx import SignalDevice
from tests.wasim.signal_tx import PreKeyBundle, SendingSession

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

CONTACT = "15557770000"


async def test_sending_chain_decrypts_on_the_receiving_side() -> None:
    """Each pkmsg of one session (same base key, counter 0, 1, 2 ...) decrypts from scratch."""
    bob = SignalDevice(identity=KeyPair.generate())
    assert bob.signed_prekey is not None
    opk_id, opk = bob.new_one_time_prekey()
    bundle = PreKeyBundle(
        bob.registration_id,
        bob.identity.pub,
        bob.signed_prekey.key_id,
        bob.signed_prekey.keys.pub,
        (opk_id, opk.pub),
    )
    alice = SendingSession(KeyPair.generate(), 1234, bundle)
    for n in range(3):
        assert bob.decrypt_pkmsg(alice.encrypt(f"m{n}".encode())) == f"m{n}".encode()
    assert alice.counter == 3


async def wait_message(client: RawClient, msg_id: str, after: int = 0) -> dict:
    event = await client.wait("message", after=after, where=lambda e: e["data"]["Info"]["ID"] == msg_id)
    return event["data"]


async def test_contact_text_arrives_and_is_receipted(sim: Simulator, start_client: StartClient) -> None:
    client = await start_client("a")
    await pair(sim, client)
    contact = sim.contact(CONTACT, push_name="Carol")

    msg_id = await sim.send_message(PHONE, contact, waproto.text("hello device"))
    data = await wait_message(client, msg_id)
    assert data["Message"]["conversation"] == "hello device"
    source = data["Info"]["MessageSource"]
    assert source["Sender"]["User"] == contact.lid
    assert source["Sender"]["Server"] == "lid"
    assert source["SenderAlt"]["User"] == CONTACT
    assert not source.get("IsFromMe", False)
    assert data["Info"]["Pushname"] == "Carol"

    delivery = await sim.wait_acked(PHONE, msg_id)
    assert delivery.sent_at is not None and delivery.acked_at is not None
    assert delivery.acked_at >= delivery.sent_at
    assert delivery.attempts == 1

    # Later messages ride the same session (one chain step each) and still decrypt.
    ids = [await sim.send_message(PHONE, CONTACT, waproto.text(f"n{i}")) for i in range(5)]
    for i, later in enumerate(ids):
        assert (await wait_message(client, later))["Message"]["conversation"] == f"n{i}"
    assert not client.named("undecryptable")
