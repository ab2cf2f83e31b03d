"""What the simulated WhatsApp server remembers about phones, their devices and messages.

Every phone number the simulator has seen is an :class:`Account`: either a phone that paired a
client (it has companion devices) or a contact someone sent a message to. Device 0 of an account is
its phone; the simulator holds that phone's Signal keys, so it can read what clients send it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from . import proto
from .codec import JID, LID_SERVER, USER_SERVER
from .content import Content, decode_message
from .keys import KeyPair
from .signal_rx import SignalDevice

# whatsmeow's first companion device id in the prototype run; later pairings count up from here.
FIRST_COMPANION_ID = 7


@dataclass
class UploadedKeys:
    """Signal keys a client registered or uploaded for one companion device (public halves only)."""

    registration_id: int = 0
    identity: bytes = b""
    signed_prekey_id: int = 0
    signed_prekey: bytes = b""
    signed_prekey_signature: bytes = b""
    one_time_prekeys: dict[int, bytes] = field(default_factory=dict)


@dataclass
class CompanionDevice:
    """A client (neonize / whatsmeow) paired to a phone."""

    device_id: int
    noise_pub: bytes
    keys: UploadedKeys
    # Set when the client acknowledged pair-success with its device signature.
    confirmed: bool = False


def lid_for_phone(phone: str) -> str:
    """A stable 15-digit LID user for a phone number (real LIDs are opaque numbers too)."""
    digest = int.from_bytes(hashlib.sha256(f"lid:{phone}".encode()).digest()[:8], "big")
    return str(100_000_000_000_000 + digest % 900_000_000_000_000)


@dataclass
class Account:
    """One WhatsApp account: a phone number, its LID, its phone's keys and its companion devices."""

    phone: str
    lid: str
    # Device 0. For a paired phone its identity is also the ADV account key that signed the pairing.
    primary: SignalDevice
    companions: dict[int, CompanionDevice] = field(default_factory=dict)
    next_device_id: int = FIRST_COMPANION_ID
    push_name: str = ""  # the ``notify`` name on messages this account sends as a contact

    @classmethod
    def create(cls, phone: str) -> Account:
        return cls(phone=phone, lid=lid_for_phone(phone), primary=SignalDevice(identity=KeyPair.generate()))

    @property
    def account_key(self) -> KeyPair:
        return self.primary.identity

    @property
    def pn_jid(self) -> JID:
        return JID(self.phone, USER_SERVER)

    @property
    def lid_jid(self) -> JID:
        return JID(self.lid, LID_SERVER)

    def device_ids(self) -> list[int]:
        return [0, *sorted(d.device_id for d in self.companions.values() if d.confirmed)]

    def add_companion(self, noise_pub: bytes, keys: UploadedKeys) -> CompanionDevice:
        device = CompanionDevice(self.next_device_id, noise_pub, keys)
        self.next_device_id += 1
        self.companions[device.device_id] = device
        return device


@dataclass
class ReceivedMessage:
    """A ``<message>`` a client sent, as a test wants to assert on it."""

    from_phone: str | None
    from_device: int | None
    to: str  # the recipient's phone number when known, else the JID as sent
    to_jid: str
    id: str
    text: str | None  # decrypted for the recipient's phone (device 0); None if not decryptable
    type: str = "text"
    own_copy_text: str | None = None  # the deviceSentMessage copy for the sender's own phone
    error: str | None = None
    received_at: float = 0.0
    child_tags: tuple[str, ...] = ()  # e.g. ("participants", "device-identity", "bot")
    attrs: dict[str, str] = field(default_factory=dict)
    # The recipient phone's copy: decrypted, unpadded waE2E.Message bytes (None if not decryptable).
    message: bytes | None = None

    @property
    def content(self) -> Content | None:
        """The recipient's copy decoded (:mod:`.content`): kind, text, media, location, reply ..."""
        if self.message is None:
            return None
        try:
            return decode_message(self.message)
        except proto.ProtoError:
            return None

    @property
    def kind(self) -> str | None:
        content = self.content
        return content.kind if content is not None else None

    def as_dict(self) -> dict[str, object]:
        return {
            "from_phone": self.from_phone,
            "from_device": self.from_device,
            "to": self.to,
            "to_jid": self.to_jid,
            "id": self.id,
            "text": self.text,
            "type": self.type,
            "own_copy_text": self.own_copy_text,
            "error": self.error,
            "received_at": self.received_at,
            "child_tags": list(self.child_tags),
            "attrs": self.attrs,
            "kind": self.kind,
            "content": content.as_dict() if (content := self.content) is not None else None,
        }
