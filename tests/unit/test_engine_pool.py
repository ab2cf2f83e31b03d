"""The pool's bookkeeping, without worker processes."""

from __future__ import annotations

from pathlib import Path

import trio

from waservice.config import EngineConfig
from waservice.engine.pool import WorkerPool
from waservice.events.model import Activity


async def test_a_closed_client_frees_its_place_on_the_worker(tmp_path: Path) -> None:
    pool = WorkerPool(EngineConfig(workers=2), trio.open_memory_channel[Activity](1)[0])
    first, second = pool.slot_of("a"), pool.slot_of("b")
    assert first is not second  # least loaded first
    client = pool.client("a", tmp_path / "a")
    await client.close()  # the session was deleted, or the service stops
    assert "a" not in first.sessions
    assert pool.slot_of("c") is first  # the freed place is taken again
