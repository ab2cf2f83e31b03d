"""Load from inside the simulator: contacts send texts to many paired phones at a steady rate.

A benchmark asks for a burst with one control request instead of one request per message; the
simulator paces it itself and the benchmark counts receipts with ``delivered``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

MAX_ERRORS_KEPT = 100
TICK = 0.005  # seconds between pacing decisions; each tick sends whatever is due
FULL_SPEED_BATCH = 200  # at rate 0, messages between yields (so the socket writers keep up)
DEFAULT_CONTACT = "18880000000"


@dataclass
class Burst:
    """``per_phone`` texts to each of ``to``, ``rate`` messages/s in total (0: as fast as possible)."""

    id: int
    to: list[str]
    per_phone: int
    rate: float
    senders: list[str] = field(default_factory=lambda: [DEFAULT_CONTACT])
    prefix: str = "burst"
    sent: int = 0
    errors: list[str] = field(default_factory=list)  # the first MAX_ERRORS_KEPT
    failed: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    first_id: str | None = None
    last_id: str | None = None

    @property
    def total(self) -> int:
        return len(self.to) * self.per_phone

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "to": self.to,
            "per_phone": self.per_phone,
            "rate": self.rate,
            "from": self.senders,
            "total": self.total,
            "sent": self.sent,
            "failed": self.failed,
            "errors": self.errors[:20],
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "done": self.finished_at is not None,
        }

    def due(self, elapsed: float) -> int:
        """How many messages should have gone out ``elapsed`` seconds after the start."""
        if self.rate <= 0:
            return min(self.total, self.sent + FULL_SPEED_BATCH)
        return min(self.total, int(elapsed * self.rate) + 1)


async def run_burst(burst: Burst, send: Callable[[str, str, str], str]) -> None:
    """Send the burst with ``send(to_phone, from_contact, text) -> id``, round-robin over the phones
    (message n goes to phone n mod len(to)), from the senders in turn."""
    plan = ((burst.to[n % len(burst.to)], n) for n in range(burst.total))
    senders = itertools.cycle(burst.senders)
    burst.started_at = time.time()
    start = trio.current_time()
    try:
        while True:
            due = burst.due(trio.current_time() - start)
            for to, n in itertools.islice(plan, due - burst.sent):
                try:
                    msg_id = send(to, next(senders), f"{burst.prefix} {burst.id} {n}")
                except Exception as exc:  # a phone without a device: count it, keep going
                    burst.failed += 1
                    if len(burst.errors) < MAX_ERRORS_KEPT:
                        burst.errors.append(f"{to}: {exc}")
                    msg_id = None
                burst.sent += 1
                burst.first_id = burst.first_id or msg_id
                burst.last_id = msg_id or burst.last_id
            if burst.sent >= burst.total:
                break
            # At full speed still yield now and then, so connections' writers get to run.
            await trio.sleep(TICK if burst.rate > 0 else 0)
    finally:
        burst.finished_at = time.time()
