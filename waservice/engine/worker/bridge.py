"""The bridge lock: one per worker process, around goneonize's process-wide Go maps.

What goneonize (`goneonize/main.go`) does with its three package-level maps, none of them locked:
- `Neonize()` writes `StopSignal[id]`, `eventChannel[id]` and `clients[id]` in its first
  milliseconds, then connects; for a new device it runs the QR loop; then `CallbackFunction` reads
  `eventChannel[id]` and `clients[id]` (FetchMe) once and loops over the channel with no map access.
- `Stop()` deletes from all three (writes).
- `SendMessage`, `Logout`, `GetMe`... read `clients[id]` as their first statement, then run for as
  long as the network takes: a send waits up to 75 s for WhatsApp's ack with no map access at all.
Go aborts the process on a map write concurrent with any other access, so writers must be alone;
concurrent reads are safe. A readers/writer lock held for the whole call would let one 60 s send
hold off every start and stop of the worker, so a hold here ends as soon as Go itself proves that
the calling goroutine is past its map access:

- A goroutine that entered Go from C stays on its OS thread until it returns. So any Go -> Python
  callback that arrives *on the calling thread* during the call comes from the call's own body,
  after its first statement. Readers release on the first such callback: whatsmeow logs every node
  it sends at debug level (the worker asks Go for debug logs and filters them in Python), and a send
  writes a node before it waits for the ack. Or on return, whichever comes first.
- `Neonize()` logs *between* its writes (database upgrade), so a starting client releases only on
  the callbacks that follow them: the first QR code, a pairing status, the first event; or return.
  Its writes are over once whatsmeow logs "Dialing" (the websocket dial in `Connect()`), but for a
  paired device `CallbackFunction` reads the maps right after the handshake, with no callback in
  between: so at "Dialing" the start's hold turns shared. Sends go on during the handshake; other
  starts and stops wait for the first event.
- After a QR loop ends with a successful pairing, the pairing-status callback takes the shared side
  again for `CallbackFunction`'s reads, released by the first event it sends.
No hold ever ends on a timer: if Go never signals, the hold lasts until the call returns.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import attrs

# Which Go -> Python callbacks prove a hold's goroutine is past its map access.
ANY_CALLBACK = frozenset({"log", "qr", "status", "event"})
AFTER_START_WRITES = frozenset({"qr", "status", "event"})
FIRST_EVENT = frozenset({"event"})


@attrs.define
class _Hold:
    exclusive: bool
    release_on: frozenset[str]
    held: bool = True


class BridgeLock:
    """A readers/writer lock whose wake-ups are targeted: a restore queues hundreds of starts
    (writers) on it, and waking all of them at every release cost O(N²) thread switches (measured:
    ~1 M context switches in a 1,000-session restore, most of the workers' CPU)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # guards the fields below; both conditions wait on it
        self._readers_ok = threading.Condition(self._mutex)  # notified (all) when a writer leaves
        self._writer_ok = threading.Condition(self._mutex)  # notified (one) when the lock falls free
        self._readers = 0
        self._writer = False
        self._holds: dict[int, _Hold] = {}  # calling thread -> its hold, while in Go

    @contextlib.contextmanager
    def call(self, *, exclusive: bool, release_on: frozenset[str] = ANY_CALLBACK) -> Iterator[None]:
        """Around one Go call, on the thread that makes it."""
        self._acquire(exclusive, release_on)
        try:
            yield
        finally:
            self._release(threading.get_ident())

    @contextlib.contextmanager
    def shared_within(self, timeout: float) -> Iterator[bool]:
        """A shared hold around a call that makes no callbacks, if one is had within `timeout`
        (yields False if not). Safe on a callback thread: it leaves that thread's own hold alone."""
        with self._mutex:
            held = self._readers_ok.wait_for(lambda: not self._writer, timeout)
            if held:
                self._readers += 1
        try:
            yield held
        finally:
            if held:
                with self._mutex:
                    self._readers -= 1
                    self._wake()

    def passed(self, via: str) -> None:
        """From a Go callback: the calling thread's goroutine is past its map access."""
        hold = self._holds.get(threading.get_ident())
        if hold is not None and hold.held and via in hold.release_on:
            self._release(threading.get_ident())

    def downgrade(self) -> None:
        """From a Go callback: the calling thread's writes are over, its reads are still ahead."""
        with self._mutex:
            hold = self._holds.get(threading.get_ident())
            if hold is None or not hold.held or not hold.exclusive:
                return
            hold.exclusive = False
            self._writer = False
            self._readers += 1
            self._readers_ok.notify_all()

    def reads_ahead(self) -> None:
        """From a Go callback: this goroutine will read the maps before its next event."""
        self._acquire(False, FIRST_EVENT)

    def _acquire(self, exclusive: bool, release_on: frozenset[str]) -> None:
        with self._mutex:
            if exclusive:
                self._writer_ok.wait_for(lambda: not self._writer and self._readers == 0)
                self._writer = True
            else:
                self._readers_ok.wait_for(lambda: not self._writer)
                self._readers += 1
            self._holds[threading.get_ident()] = _Hold(exclusive, release_on)

    def _release(self, thread: int) -> None:
        with self._mutex:
            hold = self._holds.pop(thread, None)
            if hold is None or not hold.held:
                return
            hold.held = False
            if hold.exclusive:
                self._writer = False
                self._readers_ok.notify_all()
            else:
                self._readers -= 1
            self._wake()

    def _wake(self) -> None:
        """With the mutex held: let the first waiting writer in if the lock is free. A writer woken
        but beaten to it waits again; whoever beat it wakes the next one as it leaves."""
        if not self._writer and self._readers == 0:
            self._writer_ok.notify()

    @property
    def busy(self) -> bool:
        with self._mutex:
            return self._writer or self._readers > 0
