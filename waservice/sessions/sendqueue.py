"""The per-session send queue: every outgoing message of a session, in order, one at a time.

One at a time costs nothing: whatsmeow's SendMessage holds the client's `messageSendLock` from
before encryption until the server's ack (`defer cli.messageSendLock.Unlock()` in send.go), so a
client never had two sends in flight anyway. The queue makes that order ours (Go's mutex is not
FIFO), paces it, bounds it, and lets a caller that gives up take its message back.

`Pacer` decides, with no I/O and no clock of its own: when the next message may go and how long
to show "composing" before a text. `SendQueue` does the waiting and the calling.

A message is *handed over* when its send to the engine starts. Before that a caller that gives up
takes it out of the queue and nothing is sent. From then on it completes whatever the caller does,
and `FinishingRequests` lets the request around it finish too (so an Idempotency-Key records its
outcome even if the HTTP client went away), except at shutdown. `checked_before_queueing` runs a check of the
request's just before its message is queued (an Idempotency-Key whose body was streamed to the
route is known only then).
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import attrs
import trio

from ..engine import SentMessage
from ..engine.content import Content, Text, TypingState
from ..errors import SendOutcomeUnknown, SendQueueFull, ServiceError, SessionNotConnected

log = logging.getLogger("waservice.sendqueue")

DEFAULT_QUEUE_SIZE = 1000
# Typing before a text: 50 ms per character (a fast typist), never more than TYPING_MAX seconds.
TYPING_PER_CHARACTER = 0.05
TYPING_MAX = 5.0
# Once handed over, a request finishes within this long (the send's own 75 s timeout and change).
HANDED_OVER_GRACE = 90.0

Deliver = Callable[[str, Content], Awaitable[SentMessage]]
ShowTyping = Callable[[str, TypingState], Awaitable[None]]


@attrs.frozen
class Pacing:
    """`[sending]`: the gap between two sends and whether texts are preceded by typing."""

    min_interval: float = 0.0  # seconds from the end of one send to the start of the next
    jitter: float = 0.0  # plus a random extra in [0, jitter)
    typing: bool = False  # show "composing" before a text, for typing_time(text)

    def typing_time(self, content: Content) -> float:
        if not self.typing or not isinstance(content, Text):
            return 0.0
        return min(TYPING_MAX, len(content.text) * TYPING_PER_CHARACTER)

    def per_message(self) -> float:
        """Seconds a message takes on average when the queue is busy: for Retry-After."""
        return self.min_interval + self.jitter / 2


class Pacer:
    """When the next message may be handed over. Time is passed in; randomness is injected."""

    def __init__(self, pacing: Pacing, draw: Callable[[], float] = random.random) -> None:
        self.pacing = pacing
        self._draw = draw
        self.ready_at = -math.inf  # nothing sent yet: the first message goes at once

    def sent(self, now: float) -> None:
        """A send ended at `now` (acknowledged or failed: either way WhatsApp saw an attempt)."""
        gap = self.pacing.min_interval + self.pacing.jitter * self._draw()
        self.ready_at = now + gap if gap > 0 else -math.inf


class JobState(enum.Enum):
    WAITING = "waiting"  # in the queue, maybe at its head while the pacer waits
    TYPING = "typing"  # "composing" is showing; still the caller's to take back
    HANDED_OVER = "handed_over"  # the engine has it: it completes
    DONE = "done"
    ABANDONED = "abandoned"  # its caller gave up before it was handed over: never sent


@attrs.define(eq=False)
class _Job:
    chat: str
    content: Content
    on_handover: Callable[[], None] | None
    state: JobState = JobState.WAITING
    done: trio.Event = attrs.Factory(trio.Event)
    typing_scope: trio.CancelScope | None = None
    result: SentMessage | None = None
    error: ServiceError | None = None

    def finish(self, result: SentMessage | None, error: ServiceError | None) -> None:
        self.result, self.error, self.state = result, error, JobState.DONE
        self.done.set()

    def outcome(self) -> SentMessage:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


# -- the point of no return for the request around a send ----------------------------------------


@attrs.define
class Handover:
    """Whether a request handed a message to the engine (set by the queue, read by its wrapper)."""

    happened: bool = False


_handover: ContextVar[Callable[[], None] | None] = ContextVar("waservice_handover", default=None)


class FinishingRequests:
    """Requests that finish, once their message was handed over, whatever their client does; until
    `release` (the service is stopping: they must not hold its shutdown up)."""

    def __init__(self) -> None:
        self._shielded: set[trio.CancelScope] = set()
        self.released = False

    @contextmanager
    def finish_once_handed_over(self) -> Iterator[Handover]:
        """Run the body so that, once a send inside it was handed over, cancelling it (the HTTP
        client went away) waits until the body has finished, within HANDED_OVER_GRACE. Before
        that, a cancellation takes the message out of the queue as usual."""
        handover = Handover()
        with trio.CancelScope() as scope:

            def handed_over() -> None:
                handover.happened = True
                if not self.released:
                    scope.shield = True
                    scope.deadline = min(scope.deadline, trio.current_time() + HANDED_OVER_GRACE)
                    self._shielded.add(scope)

            token = _handover.set(handed_over)
            try:
                yield handover
            finally:
                _handover.reset(token)
                self._shielded.discard(scope)

    def release(self) -> None:
        """From now on every request can be cancelled again."""
        self.released = True
        for scope in self._shielded:
            scope.shield = False
        self._shielded.clear()

    async def release_when(self, event: trio.Event) -> None:
        await event.wait()
        self.release()


QueueingCheck = Callable[[str], Awaitable[None]]  # given the session id; raises to refuse
_before_queueing: ContextVar[list[QueueingCheck] | None] = ContextVar("waservice_queueing", default=None)


@contextmanager
def checked_before_queueing(check: QueueingCheck) -> Iterator[None]:
    """Inside the body, the first message sent runs `check` (once) before it is queued."""
    token = _before_queueing.set([check])
    try:
        yield
    finally:
        _before_queueing.reset(token)


async def before_queueing(session_id: str) -> None:
    """Run the request's check, if it has one left (a session calls this first in its send)."""
    pending = _before_queueing.get()
    if pending:
        await pending.pop()(session_id)


# -- the queue ----------------------------------------------------------------------------------


class SendQueue:
    """One session's outgoing messages. `run` is the task that sends them; callers `submit`."""

    def __init__(
        self, session_id: str, pacing: Pacing, capacity: int, draw: Callable[[], float] = random.random
    ) -> None:
        self.session_id = session_id
        self.capacity = capacity
        self.pacer = Pacer(pacing, draw)
        self._waiting: deque[_Job] = deque()
        self._current: _Job | None = None  # typing or handed over
        self._work = trio.Event()  # set when a job arrives
        self._closed: str | None = None  # why nothing more is accepted

    @property
    def depth(self) -> int:
        """Messages accepted and not yet finished: waiting, typing or being sent."""
        return len(self._waiting) + (self._current is not None)

    async def submit(self, chat: str, content: Content) -> SentMessage:
        """Queue a message and wait for its outcome. Raises SendQueueFull when the queue is full,
        SendFailed and friends as the send does."""
        if self._closed is not None:
            raise SessionNotConnected(self._closed)
        if self.depth >= self.capacity:
            wait = max(1.0, self.pacer.pacing.per_message())
            raise SendQueueFull(
                f"session '{self.session_id}' has {self.depth} messages queued (sending.queue_size "
                f"is {self.capacity}); retry in {math.ceil(wait)} s",
                retry_after=wait,
            )
        job = _Job(chat, content, _handover.get())
        self._waiting.append(job)
        self._work.set()
        try:
            await job.done.wait()
        except trio.Cancelled:
            if self._take_back(job):
                raise
            # Handed over as the caller gave up: the message completes. A request that finishes
            # once handed over (its scope is shielded now) waits for the outcome; any other caller
            # gets the cancellation again right here.
            await job.done.wait()
        return job.outcome()

    def _take_back(self, job: _Job) -> bool:
        """The caller gave up: remove its message unless the engine has it. True if removed."""
        if job.state is JobState.WAITING:
            self._waiting.remove(job)
        elif job.state is JobState.TYPING:
            assert job.typing_scope is not None
            job.typing_scope.cancel()  # the runner stops typing and moves on
        else:
            return False
        job.state = JobState.ABANDONED
        return True

    async def run(self, deliver: Deliver, show_typing: ShowTyping) -> None:
        """Send queued messages until cancelled; then every message still queued fails."""
        try:
            while True:
                job = await self._next_due()
                if await self._typed(job, show_typing):
                    await self._hand_over(job, deliver)
        finally:
            self._close(f"session '{self.session_id}' was closed before the message was sent")

    async def _next_due(self) -> _Job:
        """The head of the queue, once the pacer lets it go."""
        while True:
            while not self._waiting:
                self._work = trio.Event()
                await self._work.wait()
            if self.pacer.ready_at > trio.current_time():  # never when pacing is off
                await trio.sleep_until(self.pacer.ready_at)
            if self._waiting:  # its caller may have given up meanwhile
                job = self._waiting.popleft()
                self._current = job
                return job

    async def _typed(self, job: _Job, show_typing: ShowTyping) -> bool:
        """Show "composing" for as long as the text takes to type; False if its caller gave up."""
        seconds = self.pacer.pacing.typing_time(job.content)
        if seconds <= 0:
            return True
        job.state = JobState.TYPING
        job.typing_scope = trio.CancelScope()
        with job.typing_scope:
            await _show(show_typing, job.chat, "composing")
            await trio.sleep(seconds)
        if job.state is JobState.ABANDONED:
            self._current = None
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await _show(show_typing, job.chat, "paused")
            return False
        return True

    async def _hand_over(self, job: _Job, deliver: Deliver) -> None:
        job.state = JobState.HANDED_OVER
        if job.on_handover is not None:
            job.on_handover()
        result, error = None, None
        try:
            result = await deliver(job.chat, job.content)
        except ServiceError as exc:
            error = exc
        except trio.Cancelled:
            error = SendOutcomeUnknown(
                f"session '{self.session_id}' was closed while the message was being sent: the outcome "
                "is unknown (the message may still be delivered), so check before sending it again"
            )
            raise
        except Exception as exc:  # an engine bug costs this message, not the queue
            log.exception("session=%s send failed unexpectedly", self.session_id)
            error = ServiceError(f"message not sent: internal error ({type(exc).__name__})")
        finally:
            if not isinstance(error, SessionNotConnected):  # else nothing reached WhatsApp
                self.pacer.sent(trio.current_time())
            self._current = None
            job.finish(result, error)

    def _close(self, reason: str) -> None:
        self._closed = reason
        while self._waiting:
            self._waiting.popleft().finish(None, SessionNotConnected(reason))
        if self._current is not None and self._current.state is not JobState.DONE:
            self._current.finish(None, SessionNotConnected(reason))
            self._current = None


async def _show(show_typing: ShowTyping, chat: str, state: TypingState) -> None:
    """Typing is decoration: a failure is logged and the message is sent anyway."""
    try:
        await show_typing(chat, state)
    except Exception as exc:
        log.warning("could not show %s in %s: %r", state, chat, exc)
