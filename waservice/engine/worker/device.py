"""One connection attempt of one device inside a worker: turns Go's callbacks into protocol events.

Callbacks arrive on Go's threads. Connection states: `post` hands each to the worker's trio loop
and does nothing else there. Activity: normalised and written to the activity socket right there,
before the callback returns (see activity.py for why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from neonize.events import (
    ClientOutdatedEv,
    ConnectedEv,
    ConnectFailureEv,
    DisconnectedEv,
    KeepAliveTimeoutEv,
    LoggedOutEv,
    OfflineSyncCompletedEv,
    OfflineSyncPreviewEv,
    PairStatusEv,
    StreamErrorEv,
    StreamReplacedEv,
    TemporaryBanEv,
)
from neonize.proto.Neonize_pb2 import ConnectFailureReason

from .. import protocol as p
from ..device_jid import DeviceJid
from .activity import ActivityWriter
from .go import ME
from .normalize import Normalizer

log = logging.getLogger("waservice.engine.device")

QR_CODES_PER_PAIRING = 6  # whatsmeow shows 6 codes (60 s, then 20 s each) before "timeout"


def attempt_uuid(session: str, number: int) -> str:
    """Go's name of the attempt's client: one per attempt, since a stopped QR loop keeps its own."""
    return f"{session}#{number}"


class Attempt:
    def __init__(
        self,
        session: str,
        number: int,
        db: str,
        post: Callable[[p.Message], None],
        normalizer: Normalizer,
        activity: ActivityWriter,
        soon: Callable[[Callable[[], object]], None],
    ) -> None:
        self.session = session
        self.number = number
        self.db = db
        self.uuid = attempt_uuid(session, number)
        self._post = post
        self._normalizer = normalizer
        self._activity = activity
        self._soon = soon  # runs a function on the trio thread (thread-safe)
        self.qr_codes = 0
        self.linked = False  # paired (before, or just now): a pairing code makes no sense
        # Set on the trio thread at the first QR code (the websocket is up: a pairing code can be
        # asked for), or when the device turns out to be linked, or when the attempt is over.
        self.settled = trio.Event()
        self.pair_code_asked = False
        self.stream_error: str | None = None
        self.phone: str | None = None
        self.reported_over = False  # AttemptOver was sent
        self.started = False  # its Go call was made
        self.stopping = False
        self.parked = False  # Go's goroutine for this attempt is parked for good (see go.py)
        self.returned = trio.Event()  # Neonize() returned (set on the trio thread)
        self.result = ""

    # -- on Go's threads ----------------------------------------------------------------------

    def on_qr(self, code: str) -> None:
        self.qr_codes += 1
        self._event(p.Qr(code))  # still shown with a pairing code asked for: the user may scan
        if self.qr_codes == 1:
            self._soon(self.settled.set)

    def on_status(self, status: str) -> None:
        log.debug("session=%s attempt %d: pairing status %r", self.session, self.number, status)
        if status != "success":
            self.parked = True
        if status == "timeout" and self.qr_codes >= QR_CODES_PER_PAIRING:
            # A pairing code expires with the QR loop; "QR code expired" is what metrics count.
            typed = " or the pairing code typed" if self.pair_code_asked else ""
            self._event(
                p.Stopped(f"QR code expired without being scanned{typed}; POST /connect for a new one")
            )
        elif status == "timeout":  # whatsmeow says "timeout" for any disconnect while pairing
            self._event(p.Lost(self.stream_error or "connection lost while waiting for the QR scan"))
        elif status.startswith("err") or status == "error":
            self._event(p.Lost(f"pairing failed: {status}"))

    def on_activity(self, event: Any, received: float) -> None:
        for activity in self._normalizer.activities(event, received):
            self._activity.write(activity)

    def on_event(self, code: int, event: Any) -> None:
        if code == ME:
            self.phone = event.JID.User or None
            self._normalizer.own_phone = self.phone
            self._linked()
        elif isinstance(event, OfflineSyncPreviewEv):
            log.info("session=%s: %d messages arrived while offline, coming now", self.session, event.Message)
        elif isinstance(event, OfflineSyncCompletedEv):
            log.info("session=%s: offline messages done (%d)", self.session, event.Count)
        elif isinstance(event, PairStatusEv):
            if event.Status == event.SUCCESS:
                self._linked()
                self._event(p.Paired(event.ID.User, device_jid_text(event.ID)))
            else:
                self._event(p.Lost(f"pairing failed: {event.Error}"))
        elif isinstance(event, ConnectedEv):
            self._linked()
            self._event(p.Connected(self.phone))
        elif isinstance(event, DisconnectedEv):
            self._event(p.Lost(self.stream_error or "connection lost"))
        elif isinstance(event, StreamErrorEv):
            self.stream_error = f"stream error {event.Code}" if event.Code else "stream error"
        elif isinstance(event, KeepAliveTimeoutEv):
            log.warning("session=%s keepalive timeout (%d errors)", self.session, event.ErrorCount)
        elif isinstance(event, LoggedOutEv):
            reason = ConnectFailureReason.Name(event.Reason).lower()
            self._event(p.LoggedOut(f"logged out from the phone ({reason})"))
        elif isinstance(event, StreamReplacedEv):
            self._event(p.Replaced("connection replaced: this account was opened by another client"))
        elif isinstance(event, TemporaryBanEv):
            self._event(
                p.Stopped(f"temporarily banned by WhatsApp (code {event.Code}, expires in {event.Expire} s)")
            )
        elif isinstance(event, ConnectFailureEv):
            reason = ConnectFailureReason.Name(event.Reason)
            self._event(p.Stopped(f"WhatsApp refused the connection: {reason} {event.Message}".strip()))
        elif isinstance(event, ClientOutdatedEv):
            self._event(p.Stopped("WhatsApp says this client version is outdated"))

    def _linked(self) -> None:
        if not self.linked:
            self.linked = True
            self._soon(self.settled.set)

    def _event(self, event: p.DeviceEvent) -> None:
        log.debug("session=%s attempt %d: %r", self.session, self.number, event)
        self._post(p.Event(self.session, self.number, event))

    # -- on the trio thread -------------------------------------------------------------------

    @property
    def abandoned(self) -> bool:
        """Over for us, but Go still runs it (its QR loop or a parked goroutine holds the db)."""
        return self.reported_over and not self.returned.is_set()

    def over(self, reason: str) -> p.AttemptOver | None:
        if self.reported_over:
            return None
        self.reported_over = True
        return p.AttemptOver(self.session, self.number, reason)


def device_jid_text(jid: Any) -> str:
    """A neonize JID proto as whatsmeow's store keys the device ("<user>:<device>@s.whatsapp.net")."""
    return str(DeviceJid(jid.User, jid.RawAgent, jid.Device, jid.Server))
