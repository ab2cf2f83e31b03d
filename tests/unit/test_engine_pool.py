"""The pool's bookkeeping, without worker processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from waservice.config import EngineConfig
from waservice.engine.launch import worker_environment
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


def test_the_workers_share_the_cpus_between_their_go_runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert [worker_environment(workers=n)["GOMAXPROCS"] for n in (1, 2, 3, 8, 16)] == [
        "8",
        "4",
        "2",
        "1",
        "1",
    ]
    monkeypatch.setenv("GOMAXPROCS", "6")  # the user's own setting wins
    assert worker_environment(workers=2)["GOMAXPROCS"] == "6"
