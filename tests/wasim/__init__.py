"""A WhatsApp Web protocol simulator for testing neonize/whatsmeow end to end (tests only).

Public API::

    from tests.wasim import Simulator, lease_patched_neonize, open_simulator

See ``README.md`` beside this file, ``server.Simulator`` for the control methods and
``patch.lease_patched_neonize`` for the harness.
"""

from . import waproto
from .accounts import Account, ReceivedMessage
from .client import DeviceKeys, WireClient
from .codec import JID, Node
from .connlog import Interval, Overlap
from .content import Content, decode_message
from .delivery import Delivery
from .media import MediaHost, decrypt_media, encrypt_media
from .noise import TEST_ROOT
from .patch import PatchedNeonize, PatchError, lease_patched_neonize, patched_neonize, simulator_url
from .server import CLOSE_DELAY, PendingPairing, QrData, Simulator, SimulatorError, open_simulator
from .tls import tls_env

__all__ = [
    "CLOSE_DELAY",
    "JID",
    "TEST_ROOT",
    "Account",
    "Content",
    "Delivery",
    "DeviceKeys",
    "Interval",
    "MediaHost",
    "Node",
    "Overlap",
    "PatchError",
    "PatchedNeonize",
    "PendingPairing",
    "QrData",
    "ReceivedMessage",
    "Simulator",
    "SimulatorError",
    "WireClient",
    "decode_message",
    "decrypt_media",
    "encrypt_media",
    "lease_patched_neonize",
    "open_simulator",
    "patched_neonize",
    "simulator_url",
    "tls_env",
    "waproto",
]
