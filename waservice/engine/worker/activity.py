"""The worker's activity socket: frames written straight from Go's callback threads.

whatsmeow tells WhatsApp a message arrived the same millisecond our callback starts, so from then on
the message exists only in this process until the API process has logged it. A frame handed to the
trio loop (run_sync_soon, then a channel, then the writer task) dies with the worker if it is killed
before the writer gets to it; a frame written here is in the kernel's socket buffer when the callback
returns, and the API process reads it even after this process is gone.

The socket is blocking: when the API process is behind, the callback waits here, whatsmeow's event
queue fills, and whatsmeow stops reading from WhatsApp (backpressure; nothing is dropped).

Measured (tests/simulator/test_engine_events_loss.py, bursts of 150 from 5 contacts, 2 loaded cores):
callback -> sink p50 0.2-0.9 ms, p99 5-10 ms written here; p50 0.8-2.1 ms, p99 8-40 ms through the
trio loop (run_sync_soon, outbox, writer task), which also answers pings and sends. SIGKILLs mid-burst
lost 2 of 3,600 receipted messages here (24 kills) and 1 of 1,800 through the loop (12 kills): the
window left is whatsmeow's, which receipts a message as it queues the event, before we see it.
"""

from __future__ import annotations

import logging
import socket
import threading

from ...events.model import Activity
from .. import protocol as p

log = logging.getLogger("waservice.engine.worker.activity")


class ActivityWriter:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self._sock = sock
        self._lock = threading.Lock()  # one frame at a time: Go calls back on one thread per client
        self._broken = False

    def write(self, activity: Activity) -> None:
        """From any thread; returns once the frame is in the kernel."""
        frame = p.encode(p.Happened(activity))
        with self._lock:
            if self._broken:
                return
            try:
                self._sock.sendall(frame)
            except OSError as exc:  # the API process is gone; this worker is about to exit
                self._broken = True
                log.error("activity socket broken (%s): activity from now on is lost", exc)

    def close(self) -> None:
        with self._lock:
            self._broken = True
            self._sock.close()
