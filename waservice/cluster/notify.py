"""PostgreSQL LISTEN/NOTIFY for trio: one dedicated connection, followed in a worker thread.

psycopg's async API does not run under trio (facts-scale.md section 3), so a thread blocks in the
sync `Connection.notifies(timeout=...)` for short rounds and hands what arrives to the trio thread,
where each subscriber gets it on its own bounded memory channel. The short rounds are what let the
thread notice, within `poll_interval`, that it must stop or that someone subscribed to a new channel.

A notification can be missed: while the connection is down, or when a subscriber falls so far behind
that its channel is full (the listener never waits for a slow consumer, so one cannot hold up the
others). Either way the subscriber then gets a `Resync`, and must reload whatever it follows from
the database. A new subscriber's first message is a `Resync` too, sent once its LISTEN is active, so
"load on Resync" covers the start without a gap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import attrs
import psycopg
import trio
from psycopg import sql

from .database import DatabaseUnavailable

__all__ = ["Listener", "Message", "Notification", "Resync", "notify"]

log = logging.getLogger("waservice.cluster.notify")

# Ask the kernel to give up on a silent peer (a partition) in about 20 s rather than the default 2 h:
# a NOTIFY sent meanwhile would be lost without anyone knowing it.
_CONNECT_OPTIONS: dict[str, object] = {
    "autocommit": True,  # LISTEN only takes effect once committed
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 2,
    "tcp_user_timeout": 20_000,
    "application_name": "waservice-listener",
}


@attrs.frozen
class Notification:
    channel: str
    payload: str


@attrs.frozen
class Resync:
    """Notifications on this channel may have been missed: reload what you follow."""

    reason: str


Message = Notification | Resync


@attrs.frozen
class Backoff:
    """Seconds to wait before reconnecting: `initial`, doubled after each failure, up to `maximum`."""

    initial: float = 0.2
    maximum: float = 5.0

    def after(self, delay: float) -> float:
        return min(self.maximum, delay * 2)


def notify(conn: psycopg.Connection, channel: str, payload: str = "") -> None:
    """Queue a NOTIFY in the caller's transaction: sent if and when it commits."""
    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


@attrs.define(eq=False)
class _Subscriber:
    channel: str
    send: trio.MemorySendChannel[Message]
    missed: bool = False  # owes a Resync it could not deliver yet (its channel was full)
    gone: bool = False  # the consumer closed its end

    def offer(self, message: Message) -> None:
        """Deliver without waiting; a message that does not fit becomes a Resync owed."""
        if self.settle() and not self._put(message):
            self.missed = True

    def settle(self) -> bool:
        """Deliver the Resync owed, if any; False while it still does not fit."""
        if self.missed and self._put(Resync("the subscriber fell behind")):
            self.missed = False
        return not self.missed

    def _put(self, message: Message) -> bool:
        try:
            self.send.send_nowait(message)
        except trio.WouldBlock:
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.gone = True
        return True


class Listener:
    """LISTENs on the channels its subscribers name, on one connection; reconnects when it drops.

    `subscribe` at any time, before or after `run` has started; the channel's first message is a
    `Resync` once the LISTEN is in place. `run` returns only when cancelled, within `poll_interval`.
    """

    def __init__(
        self,
        url: str,
        *,
        poll_interval: float = 0.5,
        backoff: Backoff = Backoff(),
        connect_timeout: float = 5.0,
    ) -> None:
        self._url = url
        self._poll_interval = poll_interval
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._subscribers: dict[str, list[_Subscriber]] = {}
        self._listening: set[str] = set()  # channels whose LISTEN is active on the current connection
        self.losses = 0  # how many times the connection was lost

    def subscribe(self, channel: str, buffer: int = 64) -> trio.MemoryReceiveChannel[Message]:
        """The messages of `channel`, first of them a `Resync`. Close the channel to unsubscribe."""
        send, receive = trio.open_memory_channel[Message](buffer)
        self._subscribers.setdefault(channel, []).append(_Subscriber(channel, send))
        return receive

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the channels until cancelled. Raises DatabaseUnavailable if the first connection
        fails (a wrong URL should stop the start); later failures are retried with backoff."""
        conn = await trio.to_thread.run_sync(self._connect_or_raise)
        stop = threading.Event()
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stop_on_cancel, stop)
            try:
                # Not abandoned on cancel: the thread owns the connection and closes it as it ends,
                # within one poll interval of `stop`.
                await trio.to_thread.run_sync(self._follow, conn, stop)
            finally:
                nursery.cancel_scope.cancel()

    @staticmethod
    async def _stop_on_cancel(stop: threading.Event) -> None:
        try:
            await trio.sleep_forever()
        finally:
            stop.set()

    # -- in the worker thread -----------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(
            self._url, connect_timeout=max(1, round(self._connect_timeout)), **_CONNECT_OPTIONS
        )

    def _connect_or_raise(self) -> psycopg.Connection:
        try:
            return self._connect()
        except psycopg.Error as error:
            raise DatabaseUnavailable(f"PostgreSQL unavailable for LISTEN: {error}") from error

    def _follow(self, conn: psycopg.Connection | None, stop: threading.Event) -> None:
        delay = self._backoff.initial
        try:
            while not stop.is_set():
                try:
                    if conn is None:
                        conn = self._connect()
                        log.info("LISTEN connection to PostgreSQL made again")
                    self._listen(conn)
                    for item in conn.notifies(timeout=self._poll_interval):
                        trio.from_thread.run_sync(self._deliver, Notification(item.channel, item.payload))
                        if stop.is_set():
                            break
                    trio.from_thread.run_sync(self._settle_debts)
                    delay = self._backoff.initial
                except psycopg.Error as error:
                    if conn is not None:
                        conn.close()
                        conn = None
                        trio.from_thread.run_sync(self._lost)
                    log.warning("LISTEN connection to PostgreSQL lost, retrying in %.1f s: %s", delay, error)
                    stop.wait(delay)
                    delay = self._backoff.after(delay)
        finally:
            if conn is not None:
                conn.close()

    def _listen(self, conn: psycopg.Connection) -> None:
        """LISTEN on the channels subscribed since the last round, then tell their subscribers."""
        new = trio.from_thread.run_sync(self._unlistened)
        for channel in new:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        if new:
            trio.from_thread.run_sync(self._now_listening, new)

    # -- on the trio thread (called from the worker through trio.from_thread) ------------------

    def _unlistened(self) -> list[str]:
        return [channel for channel in self._subscribers if channel not in self._listening]

    def _now_listening(self, channels: Iterable[str]) -> None:
        for channel in channels:
            self._listening.add(channel)
            # Everyone on it reloads: new subscribers for their start, the others after a reconnect.
            self._offer(channel, Resync("now listening"))

    def _lost(self) -> None:
        self.losses += 1
        self._listening.clear()

    def _deliver(self, notification: Notification) -> None:
        self._offer(notification.channel, notification)

    def _settle_debts(self) -> None:
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.settle()
        self._forget_gone()

    def _offer(self, channel: str, message: Message) -> None:
        for subscriber in self._subscribers.get(channel, ()):
            subscriber.offer(message)
        self._forget_gone()

    def _forget_gone(self) -> None:
        # The channel stays LISTENed: cheap, and a later subscriber may want it.
        for channel, subscribers in self._subscribers.items():
            if any(s.gone for s in subscribers):
                self._subscribers[channel] = [s for s in subscribers if not s.gone]
