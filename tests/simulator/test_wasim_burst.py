"""The burst's pacing, on trio's MockClock (no network, no neonize)."""

from __future__ import annotations

import pytest
import trio

from tests.wasim.burst import Burst, run_burst


@pytest.mark.trio
async def test_burst_keeps_its_rate_and_spreads_over_phones(autojump_clock: trio.abc.Clock) -> None:
    burst = Burst(1, ["a", "b"], per_phone=50, rate=200.0, senders=["x", "y"])
    sent: list[tuple[float, str, str, str]] = []

    def send(to: str, sender: str, text: str) -> str:
        sent.append((trio.current_time(), to, sender, text))
        if to == "b" and text.endswith(" 99"):
            raise RuntimeError("no device")
        return f"id{len(sent)}"

    start = trio.current_time()
    await run_burst(burst, send)
    assert len(sent) == burst.sent == 100
    # 100 messages at 200/s: the last one is due at 0.495 s, give or take one tick.
    assert 0.49 <= sent[-1][0] - start <= 0.51
    for index, (when, *_) in enumerate(sent):
        assert index <= (when - start) * 200 + 1  # never ahead of schedule
    assert [s[1] for s in sent[:4]] == ["a", "b", "a", "b"]
    assert [s[2] for s in sent[:3]] == ["x", "y", "x"]
    assert sent[7][3] == "burst 1 7"
    assert (burst.failed, burst.last_id) == (1, "id99")
    assert burst.finished_at is not None


@pytest.mark.trio
async def test_full_speed_burst_yields_between_batches(autojump_clock: trio.abc.Clock) -> None:
    burst = Burst(2, ["a"], per_phone=1000, rate=0)
    batches: list[int] = []

    async def watch() -> None:
        while burst.finished_at is None:
            batches.append(burst.sent)
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await run_burst(burst, lambda to, sender, text: "id")
    assert burst.sent == 1000
    # Other tasks ran between batches of 200, never in the middle of one.
    assert len(set(batches)) >= 2 and all(n % 200 == 0 and n < 1000 for n in batches)
