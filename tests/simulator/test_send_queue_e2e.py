"""The send queue and Idempotency-Key end to end: the real service on the real engine, against the
simulator, which sees what was actually sent."""

from __future__ import annotations

import itertools

import pytest
import trio

from tests.simulator.service_api import CONTACT, PHONE, Api, StartService
from tests.wasim import Simulator

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

PACING = "[sending]\nmin_interval = 0.5\njitter = 0.3\n"


async def send(api: Api, text: str, key: str | None = None):
    headers = {"Idempotency-Key": key} if key else {}
    return await api.http.post(
        "/send", json={"session_id": "s1", "number": CONTACT, "message": text}, headers=headers
    )


async def queued(api: Api, answers: dict[str, int], count: int) -> bool:
    """At least `count` requests queued or answered (answers counted first: a request answered
    between the two reads makes this undercount, never overcount)."""
    answered = len(answers)
    return answered + (await api.status("s1"))["queue_depth"] >= count


async def test_paced_sends_arrive_in_order_and_spaced(sim: Simulator, start_service: StartService) -> None:
    api = await start_service(extra_config=PACING)
    await api.pair(sim, "s1", PHONE)
    texts = [f"paced {n}" for n in range(4)]
    answers: dict[str, int] = {}

    async def one(text: str) -> None:
        answers[text] = (await send(api, text)).status_code

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n, text in enumerate(texts):
            nursery.start_soon(one, text)
            with trio.fail_after(10):  # the next request starts once this one is queued
                while not await queued(api, answers, n + 1):
                    await trio.sleep(0.01)
    elapsed = trio.current_time() - started
    assert answers == dict.fromkeys(texts, 200)
    received = [m for m in sim.messages_to(CONTACT) if m.text in texts]
    assert [m.text for m in received] == texts
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(received)]
    # The next send starts 0.5-0.8 s after the previous one's ack, which follows its arrival.
    assert all(gap >= 0.5 for gap in gaps), gaps
    assert elapsed < 3 * 0.8 + 15, elapsed  # loosely: a loaded box adds time, pacing adds at most this
    assert (await api.status("s1"))["queue_depth"] == 0


async def test_the_same_key_twice_and_after_a_restart_sends_once(
    sim: Simulator, start_service: StartService
) -> None:
    api = await start_service()
    await api.pair(sim, "s1", PHONE)
    first = await send(api, "once only", key="e2e-key-1")
    assert first.status_code == 200, first.text
    again = await send(api, "once only", key="e2e-key-1")
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await send(api, "a different text", key="e2e-key-1")
    assert other.status_code == 422, other.text

    assert await trio.to_thread.run_sync(api.service.stop) == 0
    await sim.wait_disconnected(PHONE)
    restarted = await start_service()  # a new process on the same data folder
    await restarted.wait_state("s1", "connected")
    after = await send(restarted, "once only", key="e2e-key-1")
    assert after.status_code == 200 and after.json() == first.json()
    fresh = await send(restarted, "once only", key="e2e-key-2")
    assert fresh.status_code == 200 and fresh.json()["result"]["id"] != first.json()["result"]["id"]
    # A 200 means WhatsApp acknowledged it, so the simulator has it already.
    received = [(m.id, m.text) for m in sim.messages_to(CONTACT)]
    assert received == [
        (first.json()["result"]["id"], "once only"),
        (fresh.json()["result"]["id"], "once only"),
    ]


async def test_typing_shows_composing_for_the_text_then_sends_it(
    sim: Simulator, start_service: StartService
) -> None:
    """Needs the engine's set_typing and the simulator's device_chatstate record (wt-engine, wt-sim)."""
    api = await start_service(extra_config="[sending]\ntyping = true\n")
    await api.pair(sim, "s1", PHONE)
    text = "typed for a second, more or less"  # 32 characters: 1.6 s of composing
    response = await send(api, text)
    assert response.status_code == 200, response.text
    (composing,) = [
        e for e in sim.events("device_chatstate") if e["phone"] == PHONE and e["state"] == "composing"
    ]
    (message,) = [m for m in sim.messages_to(CONTACT) if m.text == text]
    assert composing["to"] == CONTACT
    assert 1.6 <= message.received_at - composing["t"] < 1.6 + 5, (composing, message.received_at)
