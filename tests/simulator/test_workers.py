"""The real engine in worker processes, against the simulator: isolation, recycling, the bridge."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.simulator.engine_harness import Device, pair, pool_on
from tests.wasim import Simulator
from waservice.engine import Connected

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

CONTACT = "15559998888"


async def test_pair_and_send(sim: Simulator, patched_dir: Path, tmp_path: Path) -> None:
    async with pool_on(patched_dir) as pool, trio.open_nursery() as nursery:
        device = Device(pool, "s1", tmp_path / "s1")
        await nursery.start(device.run)
        await pair(sim, device, "15550001111")
        connected = await device.wait(Connected)
        assert connected == Connected("15550001111")
        sent = await device.client.send_text(CONTACT, "hello")
        message = await sim.wait_message(to=CONTACT, text="hello")
        assert message.id == sent.id
        nursery.cancel_scope.cancel()
