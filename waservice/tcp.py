"""The listening TCP socket: dead-peer detection for every connection, and a quiet accept loop.

Linux copies a listening socket's options to each socket `accept()` returns, so setting them once
on the listener covers every connection hypercorn serves.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
import time
from collections.abc import Callable

# A peer that vanished (no FIN, no RST) is probed after 30 s idle and dropped after 3 unanswered
# probes; data it never acknowledges (or a zero window it never opens) is dropped after 60 s.
# Without these, hypercorn's shielded socket write to such a peer would wait forever.
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3
USER_TIMEOUT_MS = 60_000

# The errors trio's accept loop retries every 0.1 s (logging a traceback each time).
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


def tune_listener(sock: socket.socket) -> None:
    """Turn on TCP keepalive and a user timeout, inherited by every accepted connection."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
    ):
        option = getattr(socket, name, None)
        if option is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


class AcceptErrorFilter(logging.Filter):
    """Turns trio's accept-failure traceback storm into one clear line, then one per `interval`.

    trio's `serve_listeners` logs every failed `accept()` with a traceback and retries after 0.1 s;
    out of file descriptors that is ten tracebacks a second for as long as the shortage lasts.
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._last: float | None = None
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, OSError) or error.errno not in ACCEPT_CAPACITY_ERRNOS:
            return True
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return False
        name = errno.errorcode.get(error.errno or 0, str(error.errno))
        record.msg = "cannot accept connections: %s (%s, open file limit %s); retrying every 0.1 s%s"
        record.args = (error.strerror, name, _nofile_limit(), self._since_last())
        record.levelno, record.levelname = logging.ERROR, "ERROR"
        record.exc_info = record.exc_text = None
        self._last, self.suppressed = now, 0
        return True

    def _since_last(self) -> str:
        if self._last is None:
            return "; raise LimitNOFILE or close idle clients"
        return f" ({self.suppressed} more failures in the last {self.interval:.0f} s)"


def _nofile_limit() -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


def quiet_accept_errors(interval: float = 60.0) -> AcceptErrorFilter:
    """Install the filter on trio's accept-loop logger (once per process); returns it."""
    logger = logging.getLogger("trio.serve_listeners")
    for installed in logger.filters:
        if isinstance(installed, AcceptErrorFilter):
            return installed
    accept_filter = AcceptErrorFilter(interval)
    logger.addFilter(accept_filter)
    return accept_filter
