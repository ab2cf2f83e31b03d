"""A WhatsApp Web protocol simulator for testing neonize/whatsmeow end to end (tests only).

Public API::

    from tests.wasim import Simulator, open_simulator, patched_neonize

See ``README.md`` beside this file, ``server.Simulator`` for the control methods and
``patch.patched_neonize`` for the harness.
"""

from .accounts import Account, ReceivedMessage
from .client import DeviceKeys, WireClient
from .codec import JID, Node
from .noise import TEST_ROOT
from .patch import PatchError, patched_neonize, simulator_url
from .server import PendingPairing, QrData, Simulator, SimulatorError, open_simulator

__all__ = [
    "JID",
    "TEST_ROOT",
    "Account",
    "DeviceKeys",
    "Node",
    "PatchError",
    "PendingPairing",
    "QrData",
    "ReceivedMessage",
    "Simulator",
    "SimulatorError",
    "WireClient",
    "open_simulator",
    "patched_neonize",
    "simulator_url",
]
