"""The simulator fixture, for the real-engine run (it lives beside the simulator tests; the port and the
patched neonize copy come from tests/conftest.py)."""

from tests.simulator.conftest import sim  # noqa: F401
