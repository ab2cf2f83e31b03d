"""The simulator fixtures, for the real-engine run (they live beside the simulator tests)."""

from tests.simulator.conftest import patched_dir, sim, sim_port  # noqa: F401
