"""What the simulator delivered to each paired device, and what the device receipted (no I/O).

WhatsApp keeps a stanza for a device until the device receipts it: a device that is offline gets it
at its next login, and so does one that was sent it but never answered. :class:`DeliveryLog` is that
bookkeeping; the server does the sending.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .codec import Node


@dataclass
class Delivery:
    """One stanza (a message from a contact or a relayed device) for one device of a paired phone."""

    id: str
    to: str  # the paired phone
    device: int  # its companion device id
    sender: str  # the contact's (or relaying account's) phone
    node: Node | None = field(repr=False)  # dropped once receipted: nothing will resend it
    queued_at: float
    sent_at: float | None = None  # first time it went out on a socket
    acked_at: float | None = None  # when the device's <receipt> for it arrived
    receipt: str | None = None  # the receipt's type ("" for delivery, "inactive", "read", ...)
    attempts: int = 0  # how many times it was written to a socket
    retries: int = 0  # <receipt type="retry">: the device could not decrypt it

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "to": self.to,
            "device": self.device,
            "from": self.sender,
            "queued_at": self.queued_at,
            "sent_at": self.sent_at,
            "acked_at": self.acked_at,
            "receipt": self.receipt,
            "attempts": self.attempts,
            "retries": self.retries,
        }


class DeliveryLog:
    """Deliveries per (phone, device), in the order they were queued."""

    def __init__(self) -> None:
        self._by_device: dict[tuple[str, int], dict[str, Delivery]] = {}
        self._devices: dict[str, set[int]] = {}  # phone → devices with deliveries

    def add(self, delivery: Delivery) -> None:
        self._by_device.setdefault((delivery.to, delivery.device), {})[delivery.id] = delivery
        self._devices.setdefault(delivery.to, set()).add(delivery.device)

    def with_id(self, phone: str, msg_id: str) -> list[Delivery]:
        """One message's deliveries to each device of a phone (cheap: waiters call it on every event)."""
        found = (self.find(phone, device, msg_id) for device in sorted(self._devices.get(phone, ())))
        return [d for d in found if d is not None]

    def unreceipted(self, phone: str, device: int) -> list[Delivery]:
        """What the device must (still) get at its next login: queued, or sent but never receipted."""
        return [d for d in self._by_device.get((phone, device), {}).values() if d.acked_at is None]

    def find(self, phone: str, device: int, msg_id: str) -> Delivery | None:
        return self._by_device.get((phone, device), {}).get(msg_id)

    def on_receipt(self, phone: str, device: int, ids: list[str], kind: str, at: float) -> list[Delivery]:
        """Record a device's receipt; returns the deliveries it covered."""
        hit = [d for msg_id in ids if (d := self.find(phone, device, msg_id)) is not None]
        for delivery in hit:
            if kind == "retry":
                delivery.retries += 1
            elif delivery.acked_at is None:
                delivery.acked_at, delivery.receipt, delivery.node = at, kind, None
        return hit

    def for_phone(self, phone: str) -> list[Delivery]:
        devices = sorted(self._devices.get(phone, ()))
        return [d for device in devices for d in self._by_device[(phone, device)].values()]

    def __iter__(self) -> Iterator[Delivery]:
        for items in self._by_device.values():
            yield from items.values()
