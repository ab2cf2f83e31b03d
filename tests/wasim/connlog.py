"""When each device was connected: the intervals of its logged-in connections, and their overlaps.

Failover tests check that no device was ever connected twice at once. WhatsApp itself allows one
live connection per device and kicks the older one when the device logs in again (a ``conflict``/
``replaced`` stream error, then a close ``CLOSE_DELAY`` later), so a replacement overlaps by design
for about that long; :meth:`ConnectionLog.overlaps` reports each overlap with its duration and
whether the kick caused it, so a test can tell the two apart.

Times are ``time.monotonic()``: on Linux that is ``CLOCK_MONOTONIC``, the same clock in every process
of the machine, so a test may compare them with its own monotonic readings when the simulator runs in
another process.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass


@dataclass
class Interval:
    """One connection of one device, from its successful login until its socket closed."""

    conn: int
    phone: str
    device: int
    logged_in_at: float
    closed_at: float | None = None  # None while it is still open
    replaced_by: int | None = None  # the connection whose login kicked this one
    replaced_at: float | None = None  # when the server sent it the ``replaced`` stream error

    def end(self, now: float) -> float:
        return self.closed_at if self.closed_at is not None else now

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Overlap:
    """Two connections of one device that were both logged in from ``start`` to ``end``.

    ``kick`` is True when the later connection's login replaced the earlier one: then the overlap is
    the server's close delay (plus the close handshake), which WhatsApp has too. Anything else (two
    clients never kicked, or a kicked one that lingered) is a device connected twice at once.
    """

    phone: str
    device: int
    first: int  # connection ids, the earlier login first
    second: int
    start: float
    end: float
    kick: bool
    open: bool  # both are still connected: ``end`` is the time of the query

    @property
    def duration(self) -> float:
        return self.end - self.start

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "duration": self.duration}


class ConnectionLog:
    """Every logged-in connection the simulator has seen, kept for the simulator's lifetime."""

    def __init__(self) -> None:
        self._intervals: dict[int, Interval] = {}  # by connection id, in login order

    def logged_in(self, conn: int, phone: str, device: int, at: float) -> None:
        self._intervals[conn] = Interval(conn, phone, device, at)

    def replaced(self, conn: int, by: int, at: float) -> None:
        interval = self._intervals.get(conn)
        if interval is not None and interval.replaced_by is None:
            interval.replaced_by, interval.replaced_at = by, at

    def closed(self, conn: int, at: float) -> None:
        """The socket closed (a connection that never logged in has no interval and is ignored)."""
        interval = self._intervals.get(conn)
        if interval is not None and interval.closed_at is None:
            interval.closed_at = at

    def intervals(self, phone: str | None = None, device: int | None = None) -> list[Interval]:
        """The intervals in login order, optionally only one phone's (and one device's)."""
        return [
            i
            for i in self._intervals.values()
            if (phone is None or i.phone == phone) and (device is None or i.device == device)
        ]

    def overlaps(self, now: float, phone: str | None = None) -> list[Overlap]:
        """Every pair of connections of one device that were logged in at the same time.

        ``now`` closes the intervals still open. Pairs are compared per device, so the cost is the
        square of one device's connection count, not of the whole log.
        """
        by_device: dict[tuple[str, int], list[Interval]] = {}
        for interval in self.intervals(phone):
            by_device.setdefault((interval.phone, interval.device), []).append(interval)
        found: list[Overlap] = []
        for intervals in by_device.values():
            for first, second in itertools.combinations(intervals, 2):
                overlap = _overlap(first, second, now)
                if overlap is not None:
                    found.append(overlap)
        return sorted(found, key=lambda o: o.start)


def _overlap(first: Interval, second: Interval, now: float) -> Overlap | None:
    if second.logged_in_at < first.logged_in_at:
        first, second = second, first
    start = second.logged_in_at
    end = min(first.end(now), second.end(now))
    if end <= start:
        return None
    return Overlap(
        phone=first.phone,
        device=first.device,
        first=first.conn,
        second=second.conn,
        start=start,
        end=end,
        kick=first.replaced_by == second.conn,
        open=first.closed_at is None and second.closed_at is None,
    )
