"""Calls into goneonize (Go) and the four callbacks handed to it. The only module importing neonize.

Every callback given to Go must stay alive for as long as any goroutine can call it. whatsmeow's
goroutines outlive the `Neonize()` call that started them (its post-connect goroutine logs
"Failed to get number of prekeys" after a dropped connection was replaced), and Go never says when
the last one is gone. So `GoBridge` creates exactly four ctypes callbacks, once, for the life of the
worker process, and routes each call by the client uuid Go passes along. (The old engine made them
per attempt, as temporaries: Go then called freed callbacks, SIGSEGV in goneonize utils/log.go.)

neonize's `NewClient` is not used: it would register a weakref finalizer calling Go's `Stop(uuid)`
at collection time, outside the bridge lock, and its callbacks are per object.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from typing import Protocol

from neonize._binder import func_callback_bytes, func_callback_bytes2, func_string, gocode
from neonize.events import (
    EVENT_TO_INT,
    INT_TO_EVENT,
    CallOfferEv,
    ChatPresenceEv,
    ClientOutdatedEv,
    ConnectedEv,
    ConnectFailureEv,
    DisconnectedEv,
    HistorySyncEv,
    KeepAliveTimeoutEv,
    LoggedOutEv,
    MessageEv,
    OfflineSyncCompletedEv,
    OfflineSyncPreviewEv,
    PairStatusEv,
    PresenceEv,
    ReceiptEv,
    StreamErrorEv,
    StreamReplacedEv,
    TemporaryBanEv,
    UndecryptableMessageEv,
)
from neonize.proto.Neonize_pb2 import (
    JID,
    DownloadReturnFunction,
    GetJIDFromStoreReturnFunction,
    IsOnWhatsAppResponse,
    IsOnWhatsAppReturnFunction,
    LogEntry,
    PairPhoneParams,
    PairPhoneReturnFunction,
    SendMessageReturnFunction,
    UploadResponse,
    UploadReturnFunction,
)
from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

from ..device_jid import parse_device_jid
from .bridge import AFTER_START_WRITES, BridgeLock
from .normalize import bare, parse_jid

log = logging.getLogger("waservice.engine.go")
go_log = logging.getLogger("whatsmeow")

# What happens in chats: normalised and written to the activity socket on the callback's thread.
ACTIVITY = frozenset(
    EVENT_TO_INT[ev]
    for ev in (
        MessageEv,
        ReceiptEv,
        ChatPresenceEv,
        PresenceEv,
        CallOfferEv,
        UndecryptableMessageEv,
        HistorySyncEv,  # a count by default: decoding takes ~10 ms per MB, counting under 1 ms (measured)
    )
)
# The events Go forwards to us (it takes the list at Neonize()); everything else stays in Go.
SUBSCRIBED = bytes(
    sorted(
        ACTIVITY
        | {
            EVENT_TO_INT[ev]
            for ev in (
                PairStatusEv,
                ConnectedEv,
                DisconnectedEv,
                StreamErrorEv,
                KeepAliveTimeoutEv,
                LoggedOutEv,
                StreamReplacedEv,
                TemporaryBanEv,
                ConnectFailureEv,
                ClientOutdatedEv,
                OfflineSyncPreviewEv,  # logged: the burst of messages that arrived while offline
                OfflineSyncCompletedEv,
            )
        }
    )
)
ME = 0  # event code of the device info CallbackFunction sends before any other event
# The name the phone shows under "Linked devices".
DEVICE_PROPS = DeviceProps(os="waservice", platformType=DeviceProps.SAFARI).SerializeToString()
# Go logs at debug level so that a send's own node log tells the bridge lock it is past its map
# read (see bridge.py); Python drops what the configured level does not want.
GO_LOG_LEVEL = b"DEBUG"
# whatsmeow's FrameSocket logs this as it dials, after Neonize() has written its maps (bridge.py).
DIALING = "Dialing "
# whatsmeow's ClientType (not DeviceProps' numbering) and the name the phone shows for a pairing
# code: what WhatsApp Web on Chrome sends (measured on the wire: platform id "1", "Chrome (Linux)").
PAIR_CLIENT_TYPE = 1  # neonize.utils.enum.ClientType.CHROME
PAIR_CLIENT_NAME = "Chrome (Linux)"
READ_RECEIPT = b"read"  # neonize.utils.enum.ReceiptType.READ
LOOKUP_WAIT = 1.0  # seconds a LID lookup waits for Go's maps before reporting the LID alone
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR}


class Receiver(Protocol):
    """What one connection attempt does with its callbacks. Called on Go's threads."""

    def on_qr(self, code: str) -> None: ...

    def on_status(self, status: str) -> None: ...

    def on_event(self, code: int, event: object) -> None: ...

    def on_activity(self, event: object, received: float) -> None:
        """`received`: time.time() as the callback started. whatsmeow receipted a message as it queued
        the event for us: that millisecond when we keep up, up to its 100-event queue earlier if not."""
        ...


class CallError(Exception):
    """A Go call failed; its text is Go's error string (safe to show)."""


class GoBridge:
    """The worker's one Go runtime: its calls, its lock and its callbacks (alive until exit)."""

    def __init__(self) -> None:
        self.lock = BridgeLock()
        self._receivers: dict[str, Receiver] = {}
        # Created once and never dropped: see the module docstring.
        self._qr_cb = func_string(self._on_qr)
        self._status_cb = func_string(self._on_status)
        self._event_cb = func_callback_bytes(self._on_event)
        self._log_cb = func_callback_bytes2(self._on_log)
        self._parked = threading.Event()  # never set: goroutines parked here wait for the process end
        self._stopped: set[str] = set()  # uuids Stop() was called for (their map entries are gone)
        self._starting: dict[int, str] = {}  # thread in Neonize() -> its uuid, until whatsmeow dials

    # -- calls (each blocks its thread; run them on worker threads) ----------------------------

    def connect(
        self, uuid: str, db: str, receiver: Receiver, account: bytes = b"", new_device: bool = False
    ) -> str:
        """Go's Neonize(): returns only when the connection is over; returns Go's error text.

        `account`: the serialized JID of the account to open (`account_jid`), checked to be in the
        store (an unknown one aborts the process); else `new_device` pairs a new one. Neither: the
        store's first device (SQLite's one account; in a shared PostgreSQL, someone else's)."""
        self._receivers[uuid] = receiver
        thread = threading.get_ident()
        self._starting[thread] = uuid  # until whatsmeow dials (see _force_active_receipts)
        try:
            with self.lock.call(exclusive=True, release_on=AFTER_START_WRITES):
                if uuid in self._stopped:  # stopped before it started: Go must not register it now
                    return "stopped"
                error = gocode.Neonize(
                    db.encode(),
                    uuid.encode(),
                    account,
                    len(account),
                    int(new_device),
                    GO_LOG_LEVEL,
                    self._qr_cb,
                    self._status_cb,
                    self._event_cb,
                    self._log_cb,
                    SUBSCRIBED,
                    len(SUBSCRIBED),
                    DEVICE_PROPS,
                    len(DEVICE_PROPS),
                    b"",
                    0,
                    None,
                )
        finally:
            self._starting.pop(thread, None)
        return _text(error)

    def stop(self, uuid: str) -> None:
        with self.lock.call(exclusive=True, release_on=frozenset()):
            self._stopped.add(uuid)
            gocode.Stop(uuid.encode())

    def forget(self, uuid: str) -> None:
        """After the attempt's Neonize() returned: no callback for it is expected any more."""
        self._receivers.pop(uuid, None)
        self._stopped.discard(uuid)

    def send(self, uuid: str, chat: str, message: Message) -> tuple[str, int]:
        to = go_jid(chat)
        body = message.SerializeToString()
        with self.lock.call(exclusive=False):
            raw = gocode.SendMessage(uuid.encode(), to, len(to), body, len(body))
        result = SendMessageReturnFunction.FromString(raw)
        if result.Error:
            raise CallError(result.Error)
        return result.SendResponse.ID, int(result.SendResponse.Timestamp)

    # Each call below reads Go's client map first, then may wait on the network for up to 75 s:
    # a shared hold, like a send (see bridge.py).

    def upload(self, uuid: str, data: bytes, media_type: int) -> UploadResponse:
        """Encrypt and upload media bytes (never a path or URL: neonize would open or fetch it)."""
        with self.lock.call(exclusive=False):
            raw = gocode.Upload(uuid.encode(), data, len(data), media_type)
        result = UploadReturnFunction.FromString(raw)
        if result.Error:
            raise CallError(f"upload failed: {result.Error}")
        return result.UploadResponse

    def download(self, uuid: str, message: bytes) -> bytes:
        """Download and decrypt the media of a serialized waE2E.Message."""
        with self.lock.call(exclusive=False):
            raw = gocode.DownloadAny(uuid.encode(), message, len(message))
        result = DownloadReturnFunction.FromString(raw)
        if result.Error:
            raise CallError(f"download failed: {result.Error}")
        return result.Binary

    def is_on_whatsapp(self, uuid: str, numbers: list[str]) -> list[IsOnWhatsAppResponse]:
        """`numbers` must be digits: Go splits the list on spaces."""
        if not all(number.isascii() and number.isdigit() for number in numbers):
            raise CallError("numbers must be digits with the country code")
        if not numbers:
            return []
        query = " ".join(numbers).encode()
        with self.lock.call(exclusive=False):
            raw = gocode.IsOnWhatsApp(uuid.encode(), query, len(query))
        result = IsOnWhatsAppReturnFunction.FromString(raw)
        if result.Error:
            raise CallError(result.Error)
        return list(result.IsOnWhatsAppResponse)

    def pair_phone(self, uuid: str, phone: str) -> str:
        """A pairing code for `phone`; call it once the attempt showed its first QR code (the
        websocket is up)."""
        if not (phone.isascii() and phone.isdigit()):
            raise CallError("the phone number must be digits with the country code")
        params = PairPhoneParams(
            phone=phone,
            showPushNotification=True,
            clientType=PAIR_CLIENT_TYPE,
            clientDisplayName=PAIR_CLIENT_NAME,
        ).SerializeToString()
        with self.lock.call(exclusive=False):
            raw = gocode.PairPhone(uuid.encode(), params, len(params))
        result = PairPhoneReturnFunction.FromString(raw)
        if result.Error:
            raise CallError(result.Error)
        return result.Code

    def mark_read(self, uuid: str, chat: str, sender: str, ids: list[str]) -> None:
        """A read receipt; `ids` must have no spaces (Go splits the list on them)."""
        if not ids or not all(ids) or any(" " in message_id for message_id in ids):
            raise CallError("message ids must be non-empty and without spaces")
        chat_jid = go_jid(chat)
        sender_jid = go_jid(sender) if sender else bare(parse_jid("")).SerializeToString()  # none
        with self.lock.call(exclusive=False):
            error = gocode.MarkRead(
                uuid.encode(),
                " ".join(ids).encode(),
                int(time.time()),
                chat_jid,
                len(chat_jid),
                sender_jid,
                len(sender_jid),
                READ_RECEIPT,
            )
        if error := _text(error):
            raise CallError(error)

    def send_chat_presence(self, uuid: str, chat: str, state: int, media: int) -> None:
        """Typing or recording (state 0, media 0 or 1) or paused (state 1, media 0). Go indexes
        two-entry tables with both: any other value panics and takes the whole worker down."""
        if state not in (0, 1) or media not in (0, 1):
            raise CallError(f"illegal chat presence {state}/{media}")
        jid = go_jid(chat)
        with self.lock.call(exclusive=False):
            error = gocode.SendChatPresence(uuid.encode(), jid, len(jid), state, media)
        if error := _text(error):
            raise CallError(error)

    def logout(self, uuid: str) -> str:
        with self.lock.call(exclusive=False):
            return _text(gocode.Logout(uuid.encode()))

    def phone_of(self, uuid: str, lid: JID) -> str | None:
        """The phone number whatsmeow's store has for a LID (a database read, no network); None if
        it has none, or the client is stopped, or a start or stop holds Go's maps for too long (a
        stop can wait for the very callback thread that is asking)."""
        with self.lock.shared_within(LOOKUP_WAIT) as held:
            if not held or uuid in self._stopped:
                return None
            query = lid.SerializeToString()
            raw = gocode.GetPNFromLID(uuid.encode(), query, len(query))
        result = GetJIDFromStoreReturnFunction.FromString(raw)
        return None if result.Error else (result.Jid.User or None)

    # -- callbacks: on Go's threads; an exception here would be printed and swallowed by ctypes --

    def _on_qr(self, uuid: int, data: int) -> None:
        self.lock.passed("qr")
        receiver = self._receivers.get(ctypes.string_at(uuid).decode())
        if receiver is not None:
            _guard(receiver.on_qr, ctypes.string_at(data).decode())

    def _on_status(self, uuid: int, data: int) -> None:
        self.lock.passed("status")
        status = ctypes.string_at(data).decode() if data else ""
        key = ctypes.string_at(uuid).decode()
        receiver = self._receivers.get(key)
        if receiver is not None:
            _guard(receiver.on_status, status)
        if status == "success":
            # The QR loop ends; CallbackFunction reads the maps next, then sends its first event.
            self.lock.reads_ahead()
            if key not in self._stopped:
                return
            self.lock.passed("event")  # Stop() removed its client: reading on would abort Go
        # The QR loop is over without a usable device: CallbackFunction would poll forever for an
        # ID (FetchMe), or dereference the client Stop() removed and abort the process. Parking
        # this goroutine is the only safe way out; the worker counts it and gets recycled.
        self._parked.wait()

    def _on_event(self, uuid: bytes, data: int, size: int, code: int) -> None:
        received = time.time()  # first: the receipt-to-log window is measured from here
        self.lock.passed("event")
        receiver = self._receivers.get(uuid.decode())
        event_type = INT_TO_EVENT.get(code)
        if receiver is None or event_type is None:
            return
        try:
            event = event_type.FromString(ctypes.string_at(data, size))
        except Exception:
            log.exception("undecodable event %d", code)
            return
        if code in ACTIVITY:
            _guard(receiver.on_activity, event, received)
        else:
            _guard(receiver.on_event, code, event)

    def _on_log(self, data: int, size: int) -> None:
        self.lock.passed("log")
        try:
            entry = LogEntry.FromString(ctypes.string_at(data, size))
            if entry.Message.startswith(DIALING):
                self.lock.downgrade()
                if (uuid := self._starting.pop(threading.get_ident(), None)) is not None:
                    _force_active_receipts(uuid)
            level = _LEVELS.get(entry.Level.upper(), logging.INFO)
            # Most lines are debug lines nobody wants: drop them before getChild, which takes
            # logging's process-wide lock (every Go thread's line would queue on it).
            if go_log.isEnabledFor(level):
                go_log.getChild(entry.Name.replace("/", ".")).log(level, "%s", entry.Message)
        except Exception:
            pass


# goneonize's SetForceActiveDeliveryReceipts returns nothing, yet neonize's binding frees its "result"
# as a string (a free() of whatever the return register held). A binding of our own returns nothing.
_set_force_active = gocode["SetForceActiveDeliveryReceipts"]
_set_force_active.argtypes = [ctypes.c_char_p, ctypes.c_bool]
_set_force_active.restype = None


def _force_active_receipts(uuid: str) -> None:
    """Receipts go out as "delivery", not "inactive" (which whatsmeow sends until the account sets
    its presence, and this service never does: it has no push name to set it with).

    Called on the starting thread as whatsmeow dials: the client is in Go's map (the hold there is
    shared, see bridge.py) and no message has been receipted yet."""
    _set_force_active(uuid.encode(), True)


def go_jid(text: str) -> bytes:
    """A JID as Go takes it; user@server or a clear error (whatsmeow would address a stanza to it)."""
    user, at, server = text.partition("@")
    if not at or not user or not server:
        raise CallError(f"not a JID: {text!r}")
    return bare(parse_jid(text)).SerializeToString()


def account_jid(text: str) -> bytes:
    """A device JID ("user[.agent][:device]@server") as Neonize() takes the account to open; Go turns
    it back into the same text to find the device's row. ValueError if it is not one."""
    jid = parse_device_jid(text)
    return JID(
        User=jid.user, RawAgent=jid.agent, Device=jid.device, Integrator=0, Server=jid.server
    ).SerializeToString()


def _text(value: object) -> str:
    if not value:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return ctypes.string_at(value).decode(errors="replace")  # type: ignore[arg-type]


def _guard(fn, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except Exception:
        log.exception("callback failed")
