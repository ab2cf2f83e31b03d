"""Relaying between paired devices: what one real client sends reaches another real client.

No cryptography: a client encrypts one copy per recipient device (``<participants><to jid><enc/>``),
and the copy for a device the simulator knows as a companion is forwarded to it as WhatsApp does,
``from="<senderLID>:<device>@lid"`` with ``sender_pn``, through the same offline queue as contacts'
messages (:mod:`.delivery`). The recipient's receipts and the sender's chat states are routed back
likewise. The copy for each phone (device 0) is still read by the simulator itself (``messages``).

Not relayed: retry receipts (the sender would need to re-encrypt; none occur while keys are
consistent), receipts for an offline device (live only), and ``<presence>`` broadcasts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .accounts import Account
from .codec import JID, Node
from .delivery import Delivery

if TYPE_CHECKING:
    from .server import Connection

# A device answers a message it decrypted with type "inactive" while it is not marked online; the
# sender sees that as delivered. "sender" receipts concern the sender's own devices only.
_RECEIPT_FOR_SENDER = {
    "": None,
    "inactive": None,
    "read": "read",
    "played": "played",
    "read-self": "read-self",
}


def encrypted_copies(node: Node, to: JID | None) -> list[tuple[JID, Node]]:
    """(recipient device, enc node) pairs of a message: inside <participants><to jid=...> or direct."""
    copies: list[tuple[JID, Node]] = []
    participants = node.child("participants")
    for target in participants.children_by_tag("to") if participants else []:
        jid = target.jid("jid")
        enc = target.child("enc")
        if jid is not None and enc is not None:
            copies.append((jid, enc))
    direct = node.child("enc")
    if direct is not None and to is not None:
        copies.append((to, direct))
    return copies


class DeviceRelay:
    """Device → device routing for :class:`~.server.Simulator` (which provides what is declared)."""

    accounts: dict[str, Account]

    if TYPE_CHECKING:  # provided by Simulator and ContactSide; not defined here, so never shadowed

        def _account_for(self, jid: JID | None) -> Account | None: ...
        def _deliver(self, delivery: Delivery) -> None: ...
        def device_connection(self, phone: str, device: int) -> Connection | None: ...
        def _record(self, kind: str, details: dict[str, object]) -> None: ...

    def relay_message(self, conn: Connection, node: Node, to: JID | None, recipient: Account | None) -> int:
        """Forward each copy meant for another paired device; returns how many were queued."""
        sender = self.accounts.get(conn.phone or "")
        if sender is None or conn.device_id is None or recipient is None:
            return 0
        relayed = 0
        now = time.time()
        for target, enc in encrypted_copies(node, to):
            owner = self._account_for(target)
            device = owner.companions.get(target.device) if owner and target.device else None
            if owner is None or device is None or not device.confirmed:
                continue
            if owner is sender and target.device == conn.device_id:
                continue
            attrs: dict[str, object] = {
                "from": sender.lid_jid.with_device(conn.device_id),
                "sender_pn": sender.pn_jid,
                "addressing_mode": "lid",
                "id": node.attr("id"),
                "t": str(int(now)),
                "type": node.attr("type", "text"),
            }
            if node.attr("edit"):
                attrs["edit"] = node.attr("edit")
            if owner is sender:  # the sender's other device: a message "from me" in the chat with recipient
                attrs["recipient"] = recipient.lid_jid
                attrs["peer_recipient_pn"] = recipient.pn_jid
            forwarded = Node("message", attrs, [Node("enc", dict(enc.attrs), enc.data)])
            self._deliver(Delivery(node.attr("id"), owner.phone, target.device, sender.phone, forwarded, now))
            relayed += 1
        if relayed:
            self._record("relayed", {"id": node.attr("id"), "from": sender.phone, "copies": relayed})
        return relayed

    def relay_receipt(self, conn: Connection, node: Node) -> int:
        """Route a device's receipt for a relayed message to the sender's live devices: the sending
        device for a delivery receipt (``to`` names it), every device for a read receipt (``to`` is
        the chat). Returns how many devices got it."""
        target = node.jid("to")
        owner = self._account_for(target)
        sender = self.accounts.get(conn.phone or "")
        kind = node.attr("type")
        if target is None or owner is None or sender is None or conn.device_id is None:
            return 0
        if owner is sender or kind not in _RECEIPT_FOR_SENDER:
            return 0
        devices = [target.device] if target.device else sorted(owner.companions)
        attrs: dict[str, object] = {
            "from": sender.lid_jid.with_device(conn.device_id),
            "id": node.attr("id"),
            "t": node.attr("t") or str(int(time.time())),
        }
        if _RECEIPT_FOR_SENDER[kind]:
            attrs["type"] = _RECEIPT_FOR_SENDER[kind]
        item_list = node.child("list")
        forwarded = Node("receipt", attrs, [item_list] if item_list is not None else None)
        sent = 0
        for device in devices:
            peer = self.device_connection(owner.phone, device)
            if peer is not None:
                peer.send(forwarded)
                sent += 1
        return sent

    def relay_chatstate(self, conn: Connection, node: Node) -> int:
        """Route a device's typing state to every live device of the phone it is typing to."""
        target = self._account_for(node.jid("to"))
        sender = self.accounts.get(conn.phone or "")
        if target is None or sender is None or not target.companions:
            return 0
        forwarded = Node("chatstate", {"from": sender.lid_jid}, node.content)
        sent = 0
        for device in target.companions.values():
            peer = self.device_connection(target.phone, device.device_id)
            if peer is not None:
                peer.send(forwarded)
                sent += 1
        return sent
