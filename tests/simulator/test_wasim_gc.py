"""The simulator process's garbage collection: full passes when it is idle, never in the middle of
a burst of logins (each one stopped it for 0.3-0.4 s with 1,000 connections). MockClock, no network."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import trio
import trio.testing

from tests.wasim.__main__ import FULL_GC_AT_LEAST_EVERY, IDLE_FOR_FULL_GC, collect_when_idle


@pytest.fixture
def full_passes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The times of the full collections asked for; gc's thresholds are put back afterwards."""
    passes: list[float] = []
    monkeypatch.setattr(gc, "collect", lambda *_: passes.append(trio.current_time()) or 0)
    thresholds = gc.get_threshold()
    try:
        yield passes
    finally:
        gc.set_threshold(*thresholds)


async def _busy(sim: SimpleNamespace, seconds: float) -> None:
    """Something recorded every tenth of a second, like logins during a restore."""
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        sim.history.append("login")
        await trio.sleep(0.1)


@pytest.mark.trio
async def test_full_passes_wait_for_a_pause(autojump_clock: trio.abc.Clock, full_passes: list[float]) -> None:
    sim = SimpleNamespace(history=[])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_when_idle, sim)
        await trio.testing.wait_all_tasks_blocked()
        assert gc.get_threshold()[2] >= 1 << 30  # no automatic full pass any more
        young = gc.get_threshold()[:2]

        await trio.sleep(10)
        assert full_passes == []  # idle from the start: nothing new to collect

        start = trio.current_time()
        await _busy(sim, 20)
        assert full_passes == []  # never during the burst
        await trio.sleep(3 * IDLE_FOR_FULL_GC)
        assert len(full_passes) == 1  # once it paused ...
        assert full_passes[0] - start <= 20 + 2 * IDLE_FOR_FULL_GC + 0.01
        await trio.sleep(30)
        assert len(full_passes) == 1  # ... and not again while nothing happens
        assert gc.get_threshold()[:2] == young
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_steady_traffic_still_gets_a_full_pass(
    autojump_clock: trio.abc.Clock, full_passes: list[float]
) -> None:
    sim = SimpleNamespace(history=[])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_when_idle, sim)
        start = trio.current_time()
        await _busy(sim, 2.5 * FULL_GC_AT_LEAST_EVERY)
        gaps = [b - a for a, b in zip([start, *full_passes], full_passes, strict=False)]
        assert len(full_passes) == 2, full_passes
        assert all(gap <= FULL_GC_AT_LEAST_EVERY + IDLE_FOR_FULL_GC + 0.01 for gap in gaps), gaps
        nursery.cancel_scope.cancel()
