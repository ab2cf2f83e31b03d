"""The contacts' side: simulated people who write to, receipt, type at and call a paired device.

A contact is an :class:`~.accounts.Account` without companion devices: a phone number with a fixed
LID and a fixed Signal identity (the one the simulator also hands out in its prekey bundle, so a
device that wrote to the contact first trusts it). :class:`ContactSide` is mixed into the
:class:`~.server.Simulator`; its methods queue stanzas on the device's connection and return at once.

Every stanza addresses the device as WhatsApp does today: ``from="<LID>@lid"`` with the phone number
in ``sender_pn`` (messages) or nothing at all (receipts, chat states), so a device learns the LID→PN
mapping only from messages.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

import trio

from . import proto, waproto
from .accounts import Account, CompanionDevice
from .burst import Burst, run_burst
from .codec import JID, USER_SERVER, Node
from .delivery import Delivery, DeliveryLog
from .errors import SimulatorError
from .media import MMS_TYPE, MediaHost, encrypt_media
from .signal_tx import PreKeyBundle, SendingSession

if TYPE_CHECKING:
    from collections.abc import Callable

    from .server import Connection

# waE2E.Message field → (stanza type, enc mediatype) as WhatsApp labels them.
_STANZA_KINDS: dict[int, tuple[str, str | None]] = {
    1: ("text", None),
    6: ("text", None),
    3: ("media", "image"),
    4: ("media", "vcard"),
    5: ("media", "location"),
    7: ("media", "document"),
    8: ("media", "audio"),
    9: ("media", "video"),
    26: ("media", "sticker"),
    12: ("text", None),
    46: ("reaction", None),
}
# ProtocolMessage.type → the stanza's ``edit`` attribute (types.EditAttribute in whatsmeow).
_EDIT_ATTRIBUTE = {14: "1", 0: "7"}  # MESSAGE_EDIT, REVOKE (by the sender)


def new_message_id() -> str:
    """An id shaped like a phone's: ``3EB0`` and 16 upper-case hex digits."""
    return "3EB0" + secrets.token_hex(8).upper()


def stanza_attrs(message: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """(message attributes, enc attributes) WhatsApp puts on a stanza carrying this waE2E.Message."""
    fields = proto.decode(message)
    kind, mediatype = next((_STANZA_KINDS[n] for n in fields if n in _STANZA_KINDS), ("text", None))
    attrs = {"type": kind}
    protocol = proto.first_bytes(fields, 12)
    if protocol is not None:
        edit = _EDIT_ATTRIBUTE.get(proto.first_int(proto.decode(protocol), 2, 0) or 0)
        if edit:
            attrs["edit"] = edit
    return attrs, ({"mediatype": mediatype} if mediatype else {})


class ContactSide:
    """Contact → device traffic for :class:`~.server.Simulator` (which provides the attributes below)."""

    accounts: dict[str, Account]
    connections: dict[int, Connection]
    deliveries: DeliveryLog
    lost_receipt_phones: set[str]
    bursts: list[Burst]
    _sessions: dict[tuple[str, str, int], SendingSession]
    _handlers: trio.Nursery | None
    _active_devices: dict[tuple[str, int], Connection]  # (phone, device) → its live connection
    media: MediaHost

    if TYPE_CHECKING:  # provided by Simulator; not defined here, so never shadowed

        def account(self, phone: str) -> Account: ...
        def _record(self, kind: str, details: dict[str, object]) -> None: ...
        async def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> object: ...

    # -------------------------------------------------------------- contacts and devices

    def contact(self, phone: str, push_name: str | None = None) -> Account:
        """The contact with this phone number (created on first use; its LID and keys never change)."""
        account = self.account(phone)
        if push_name is not None:
            account.push_name = push_name
        return account

    def _as_contact(self, contact: str | Account) -> Account:
        return contact if isinstance(contact, Account) else self.contact(contact)

    def _paired_devices(self, phone: str) -> list[CompanionDevice]:
        account = self.accounts.get(phone.lstrip("+"))
        devices = [d for d in account.companions.values() if d.confirmed] if account else []
        if not devices:
            raise SimulatorError(f"{phone} has no paired device to deliver to")
        return sorted(devices, key=lambda d: d.device_id)

    def device_connection(self, phone: str, device: int) -> Connection | None:
        """The device's connection if it is logged in and past the post-login ``passive`` IQ."""
        conn = self._active_devices.get((phone, device))
        return conn if conn is not None and conn.state == "active" else None

    def _to_devices(self, to_phone: str, node: Node) -> int:
        """Send a stanza to every live device of a paired phone (stanzas with no offline queue)."""
        sent = 0
        for device in self._paired_devices(to_phone):
            conn = self.device_connection(to_phone.lstrip("+"), device.device_id)
            if conn is not None:
                conn.send(node)
                sent += 1
        return sent

    # -------------------------------------------------------------- messages

    async def send_message(
        self, to_phone: str, from_contact: str | Account, message: bytes, msg_id: str | None = None
    ) -> str:
        """A contact sends ``message`` (a serialized waE2E.Message, see ``waproto``) to every paired
        device of ``to_phone``; returns the message id. Devices that are offline get it at their next
        login; :meth:`delivered` tells when each device receipted it."""
        return self.queue_message(to_phone, from_contact, message, msg_id)

    def queue_message(
        self, to_phone: str, from_contact: str | Account, message: bytes, msg_id: str | None = None
    ) -> str:
        """The synchronous core of :meth:`send_message` (for bursts from inside the trio thread)."""
        to_phone = to_phone.lstrip("+")
        contact = self._as_contact(from_contact)
        msg_id = msg_id or new_message_id()
        message_attrs, enc_attrs = stanza_attrs(message)
        now = time.time()
        for device in self._paired_devices(to_phone):
            envelope = self._session(contact, to_phone, device).encrypt(message)
            node = Node(
                "message",
                {
                    "from": contact.lid_jid,
                    "sender_pn": contact.pn_jid,
                    "addressing_mode": "lid",
                    "id": msg_id,
                    "t": str(int(now)),
                    **({"notify": contact.push_name} if contact.push_name else {}),
                    **message_attrs,
                },
                [Node("enc", {"v": "2", "type": "pkmsg", **enc_attrs}, envelope)],
            )
            self._deliver(Delivery(msg_id, to_phone, device.device_id, contact.phone, node, now))
        return msg_id

    def _session(self, contact: Account, to_phone: str, device: CompanionDevice) -> SendingSession:
        key = (contact.phone, to_phone, device.device_id)
        session = self._sessions.get(key)
        if session is None:
            keys = device.keys
            one_time = None
            if keys.one_time_prekeys:  # consumed, as the server hands each one out once
                opk_id = next(iter(keys.one_time_prekeys))
                one_time = (opk_id, keys.one_time_prekeys.pop(opk_id))
            bundle = PreKeyBundle(
                keys.registration_id, keys.identity, keys.signed_prekey_id, keys.signed_prekey, one_time
            )
            session = SendingSession(contact.primary.identity, contact.primary.registration_id, bundle)
            self._sessions[key] = session
        return session

    def _deliver(self, delivery: Delivery) -> None:
        self.deliveries.add(delivery)
        conn = self.device_connection(delivery.to, delivery.device)
        if conn is not None:
            self._write(conn, delivery)

    def _device_closed(self, conn: Connection) -> None:
        key = (conn.phone or "", conn.device_id or 0)
        if self._active_devices.get(key) is conn:
            del self._active_devices[key]

    @staticmethod
    def _write(conn: Connection, delivery: Delivery) -> None:
        assert delivery.node is not None, "a receipted stanza is never sent again"
        delivery.attempts += 1
        if delivery.sent_at is None:
            delivery.sent_at = time.time()
        conn.send(delivery.node)

    def _device_active(self, conn: Connection) -> None:
        """A device finished logging in (``passive`` answered): it takes stanzas from now on, starting
        with what it missed, bracketed as WhatsApp does with ``offline_preview``
        (OfflineSyncPreviewEv) and ``offline`` (OfflineSyncCompletedEv)."""
        assert conn.phone is not None and conn.device_id is not None
        self._active_devices[(conn.phone, conn.device_id)] = conn
        pending = self.deliveries.unreceipted(conn.phone, conn.device_id)
        if pending:
            count = str(len(pending))
            preview = {"count": count, "message": count, "notification": "0", "receipt": "0", "appdata": "0"}
            conn.send(Node("ib", {}, [Node("offline_preview", preview)]))
            for delivery in pending:
                self._write(conn, delivery)
        conn.send(Node("ib", {}, [Node("offline", {"count": str(len(pending))})]))
        self._record("offline_flushed", {"conn": conn.id, "phone": conn.phone, "count": len(pending)})

    def on_device_receipt(self, conn: Connection, node: Node) -> list[Delivery]:
        """A device receipted stanzas the simulator delivered (``<receipt id [type]>``)."""
        if conn.phone is None or conn.device_id is None:
            return []
        if conn.phone in self.lost_receipt_phones:
            self._record("receipt_lost", {"phone": conn.phone, "id": node.attr("id")})
            return []
        item_list = node.child("list")
        ids = [node.attr("id")] + [
            i.attr("id") for i in (item_list.children_by_tag("item") if item_list else [])
        ]
        kind = node.attr("type")
        hit = self.deliveries.on_receipt(conn.phone, conn.device_id, ids, kind, time.time())
        if hit:
            self._record(
                "device_receipt", {"phone": conn.phone, "device": conn.device_id, "ids": ids, "type": kind}
            )
        return hit

    def start_burst(
        self, to: list[str], per_phone: int, rate: float = 0.0, senders: list[str] | None = None
    ) -> Burst:
        """Start sending ``per_phone`` texts (``"burst <id> <n>"``) to each phone in ``to`` at ``rate``
        messages/s in total (0: as fast as the simulator can), from ``senders`` in turn (default one
        contact). Returns at once; the :class:`~.burst.Burst` fills in ``sent`` and ``finished_at``."""
        if self._handlers is None:
            raise SimulatorError("the simulator is not serving")
        burst = Burst(len(self.bursts) + 1, [p.lstrip("+") for p in to], per_phone, rate)
        if senders:
            burst.senders = [s.lstrip("+") for s in senders]
        self.bursts.append(burst)

        def send(phone: str, contact: str, body: str) -> str:
            return self.queue_message(phone, contact, waproto.text(body))

        self._handlers.start_soon(run_burst, burst, send)
        return burst

    def lose_receipts(self, phones: list[str] | set[str]) -> None:
        """Forget the receipts these phones' devices send (as if lost on the way), so their messages
        count as unreceipted and are sent again at the next login; replaces the set."""
        self.lost_receipt_phones = {p.lstrip("+") for p in phones}

    def delivered(self, phone: str | None = None) -> list[Delivery]:
        """What the simulator delivered (or queued) to a paired phone's devices, with ``sent_at``,
        ``acked_at`` (the device's receipt) and ``attempts``; every phone when ``phone`` is None."""
        return list(self.deliveries) if phone is None else self.deliveries.for_phone(phone.lstrip("+"))

    async def wait_acked(self, phone: str, msg_id: str, timeout: float = 15.0) -> Delivery:
        """Until every device of ``phone`` receipted ``msg_id``; returns the first device's record."""

        def acked() -> list[Delivery] | None:
            mine = self.deliveries.with_id(phone.lstrip("+"), msg_id)
            return mine if mine and all(d.acked_at is not None for d in mine) else None

        found = await self.wait_for(acked, timeout)
        assert isinstance(found, list)
        return found[0]

    async def send_media(
        self,
        to_phone: str,
        from_contact: str | Account,
        kind: str,
        data: bytes,
        mimetype: str,
        caption: str | None = None,
        file_name: str | None = None,
        msg_id: str | None = None,
    ) -> str:
        """The contact sends a file: ``data`` is encrypted and stored on the media host, and the
        image/video/audio/voice/document/sticker message carries its real key and hashes, so the
        device can download it (``download_any`` gives back ``data``). Returns the message id."""
        encrypted = encrypt_media(data, kind)
        stored = self.media.store(encrypted.blob, MMS_TYPE[kind])
        message = waproto.uploaded_media(
            kind,
            self.media.url(stored),
            stored.direct_path,
            encrypted.media_key,
            encrypted.file_sha256,
            encrypted.file_enc_sha256,
            encrypted.file_length,
            mimetype,
            caption,
            file_name,
        )
        self._record("media_stored", {"from": self._as_contact(from_contact).phone, "kind": kind})
        return self.queue_message(to_phone, from_contact, message, msg_id)

    # -------------------------------------------------------------- receipts, typing, presence, calls

    def send_receipt(
        self, to_phone: str, from_contact: str | Account, ids: list[str] | str, type: str | None = None
    ) -> int:
        """The contact receipts messages the device sent it: delivered (``type=None``), ``"read"`` or
        ``"played"``. Returns how many live devices got it (receipts are not queued)."""
        contact = self._as_contact(from_contact)
        ids = [ids] if isinstance(ids, str) else list(ids)
        attrs: dict[str, object] = {"from": contact.lid_jid, "id": ids[0], "t": str(int(time.time()))}
        if type:
            attrs["type"] = type
        items = [Node("list", {}, [Node("item", {"id": i}) for i in ids[1:]])] if len(ids) > 1 else None
        return self._to_devices(to_phone, Node("receipt", attrs, items))

    def send_chatstate(
        self, to_phone: str, from_contact: str | Account, state: str = "composing", media: str | None = None
    ) -> int:
        """The contact is typing (``"composing"``; ``media="audio"``: recording) or stopped (``"paused"``)."""
        if state not in ("composing", "paused"):
            raise ValueError(f"chat state must be composing or paused, not {state!r}")
        contact = self._as_contact(from_contact)
        child = Node(state, {"media": media} if media else {})
        return self._to_devices(to_phone, Node("chatstate", {"from": contact.lid_jid}, [child]))

    def send_presence(
        self, to_phone: str, from_contact: str | Account, available: bool = True, last_seen: int | None = None
    ) -> int:
        """The contact comes online or goes offline (``last_seen`` in unix seconds, when shown)."""
        contact = self._as_contact(from_contact)
        attrs: dict[str, object] = {"from": JID(contact.phone, USER_SERVER)}
        if not available:
            attrs["type"] = "unavailable"
        if last_seen is not None:
            attrs["last"] = str(last_seen)
        return self._to_devices(to_phone, Node("presence", attrs))

    def send_call_offer(
        self, to_phone: str, from_contact: str | Account, call_id: str | None = None, video: bool = False
    ) -> str:
        """The contact rings the device (CallOfferEv); returns the call id."""
        contact = self._as_contact(from_contact)
        call_id = call_id or secrets.token_hex(16).upper()
        offer = Node(
            "offer",
            {"call-id": call_id, "call-creator": contact.lid_jid, "caller_pn": contact.pn_jid},
            [Node("video" if video else "audio", {"enc": "opus", "rate": "16000"})],
        )
        attrs = {
            "from": contact.lid_jid,
            "id": new_message_id(),
            "t": str(int(time.time())),
            "platform": "android",
            "version": "2.24.1",
        }
        self._to_devices(to_phone, Node("call", attrs, [offer]))
        return call_id
