"""GET /events: the event log as Server-Sent Events, replayed from a cursor, then followed live.

Each stream keeps a cursor: the id of the last logged event it has looked at (sent, or skipped by
its filters). It reads the durable log a page at a time until the hub's ring holds everything after
the cursor, then follows the ring. So a stream holds one page or one ring batch, however slow its
reader: one that falls out of the ring while live, or one of whose writes blocks too long, is sent
a last `overflow` event and disconnected; it resumes with Last-Event-ID, from the log.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Annotated

import attrs
import msgspec
import trio
from quart import Blueprint, Response, current_app, request
from quart_schema import document_headers, document_querystring, tag

from ..config import StreamConfig
from ..errors import Forbidden, InvalidRequest, TooManyStreams
from ..events.hub import EventHub
from ..events.model import TYPES, LoggedEvent
from ..ids import validate_session_id
from ..store import EventStore
from .caller import caller, filtered_by_caller
from .models import SessionId
from .routes import errors

log = logging.getLogger("waservice.api")

bp = Blueprint("stream", __name__)

CHUNK_BYTES = 64 * 1024  # events written together up to this size: fewer, larger writes in a burst
MAX_EVENT_ID = 2**63 - 1  # SQLite's largest integer
_json = msgspec.json.Encoder()


# -- what a client asks for ----------------------------------------------------------------------


@attrs.frozen
class EventFilter:
    session_id: str | None = None
    types: frozenset[str] | None = None

    def matches(self, event: LoggedEvent) -> bool:
        return (self.session_id is None or event.session_id == self.session_id) and (
            self.types is None or event.type in self.types
        )


def parse_types(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    names = value.split(",")
    unknown = [name for name in names if name not in TYPES]
    if unknown:
        raise InvalidRequest(f"unknown event type {unknown[0]!r} in types: use {', '.join(TYPES)}")
    return frozenset(names)


def parse_event_id(value: str, source: str) -> int:
    value = value.strip()
    if not value.isascii() or not value.isdigit() or int(value) > MAX_EVENT_ID:
        raise InvalidRequest(f"{source} must be an event id (a whole number >= 0), got {value[:40]!r}")
    return int(value)


# -- the SSE wire format -------------------------------------------------------------------------


def sse_event(event: LoggedEvent) -> bytes:
    # Types come from TYPES and msgspec's JSON has no raw newline: every field is one line.
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.type.encode(), _json.encode(event))


def sse_comment(text: str, event_id: int | None = None) -> bytes:
    # An `id:` with no data moves the client's Last-Event-ID without an event: a filtered stream
    # that skipped many events resumes from here, not from its last match.
    line = b"" if event_id is None else b"id: %d\n" % event_id
    return b": %s\n%s\n" % (text.encode(), line)


def sse_overflow(reason: str, last_event_id: int) -> bytes:
    data = _json.encode({"reason": reason, "last_event_id": last_event_id})
    return b"event: overflow\ndata: %s\n\n" % data


def sse_chunks(events: Sequence[LoggedEvent], wanted: EventFilter) -> Iterator[tuple[bytes, int]]:
    """The matching events as SSE in writes of about CHUNK_BYTES, each with its last event's id."""
    chunk = bytearray()
    last = 0
    for event in events:
        if wanted.matches(event):
            chunk += sse_event(event)
            last = event.id
            if len(chunk) >= CHUNK_BYTES:
                yield bytes(chunk), last
                chunk.clear()
    if chunk:
        yield bytes(chunk), last


# -- what every stream shares --------------------------------------------------------------------


class LiveEvents:
    """The log, its hub, the stream settings, the open streams, and the shutdown they all watch."""

    def __init__(self, store: EventStore, hub: EventHub, config: StreamConfig | None = None) -> None:
        self.store = store
        self.hub = hub
        self.config = config or StreamConfig()
        self.open = 0
        self.closing = False
        self._waits: set[trio.CancelScope] = set()

    def close(self) -> None:
        """The service is stopping: every stream ends now, not at the end of the shutdown grace."""
        self.closing = True
        for scope in self._waits:
            scope.cancel()

    async def close_when(self, stopping: trio.Event) -> None:
        await stopping.wait()
        self.close()

    @contextlib.contextmanager
    def wait_scope(self) -> Iterator[None]:
        """Around a stream's wait for news: cancelled by `close()`."""
        with trio.CancelScope() as scope:
            if self.closing:
                scope.cancel()
            self._waits.add(scope)
            try:
                yield
            finally:
                self._waits.discard(scope)

    def stream(self, wanted: EventFilter, after: int | None) -> AsyncIterator[bytes]:
        return EventStream(self, wanted, after).run()


class EventStream:
    """One subscriber: replay from the log, then live from the hub, ended by overflow or shutdown."""

    def __init__(self, live: LiveEvents, wanted: EventFilter, after: int | None) -> None:
        self.live = live
        self.wanted = wanted
        head = live.hub.last_id
        # No cursor: only new events. One past the head (a log that was reset) replays nothing.
        self.cursor = head if after is None else min(after, head)
        self.sent_id = self.cursor  # the client's Last-Event-ID: the opening block sets it
        self.last_write = trio.current_time()

    async def run(self) -> AsyncIterator[bytes]:
        """The response body. Each write is timed; a write too slow ends the stream."""
        limit = self.live.config.write_timeout
        self.live.open += 1
        try:
            async with contextlib.aclosing(self._produce()) as chunks:
                async for chunk in chunks:
                    started = trio.current_time()
                    yield chunk
                    self.last_write = trio.current_time()
                    if self.last_write - started > limit:
                        reason = (
                            f"too slow: a write took {self.last_write - started:.1f} s (limit {limit:g} s)"
                        )
                        log.info("event stream cut: %s", reason)
                        yield sse_overflow(reason, self.sent_id)
                        return
        finally:
            self.live.open -= 1

    async def _produce(self) -> AsyncIterator[bytes]:
        config = self.live.config
        # The opening id: a client that connected without one (or past the log's end) resumes from here.
        yield b"retry: %d\n%s" % (config.retry_ms, sse_comment(f"events after id {self.cursor}", self.cursor))
        hub = self.live.hub
        while not self.live.closing and hub.since(self.cursor) is None:
            page, scanned_to = await self._read_log()
            for chunk in self._send(page):
                yield chunk
            self.cursor = scanned_to
        yield sse_comment("live", self._advance())  # the replay is over: a client may rely on that
        while not self.live.closing:
            batch = hub.since(self.cursor)
            if batch is None:
                reason = f"fell behind: events after id {self.cursor} left the live buffer unsent"
                log.info("event stream cut: %s", reason)
                yield sse_overflow(reason, self.sent_id)
                return
            if batch:
                for chunk in self._send(batch):
                    yield chunk
                self.cursor = batch[-1].id
                continue
            deadline = self.last_write + config.heartbeat
            if trio.current_time() >= deadline:
                yield sse_comment("keepalive", self._advance())
                continue
            with trio.move_on_at(deadline), self.live.wait_scope():
                await hub.wait_beyond(self.cursor)
                # Gather what follows for a moment: one write for many events. With 100 readers
                # a write per event per reader was most of the API process's CPU.
                await trio.sleep(config.coalesce)
        yield sse_comment("the service is shutting down: reconnect with Last-Event-ID")

    async def _read_log(self) -> tuple[list[LoggedEvent], int]:
        """The next page of the log after the cursor, and the id the cursor can move to after it."""
        head = self.live.hub.last_id  # every event up to here is in the log already
        size = self.live.config.replay_page
        types = sorted(self.wanted.types) if self.wanted.types is not None else None
        page = await self.live.store.after(self.cursor, size, self.wanted.session_id, types)
        if len(page) == size:
            return page, page[-1].id
        # A short page read the log to its end, which was at `head` or beyond: the filters
        # skipped everything else up to there.
        return page, max(head, page[-1].id if page else self.cursor)

    def _advance(self) -> int | None:
        """The cursor, when the client's Last-Event-ID is behind it (its filters skipped events)."""
        if self.cursor <= self.sent_id:
            return None
        self.sent_id = self.cursor
        return self.cursor

    def _send(self, events: Sequence[LoggedEvent]) -> Iterator[bytes]:
        """Lazily: the client's Last-Event-ID moves as each chunk is handed to the writer."""
        for chunk, last_id in sse_chunks(events, self.wanted):
            self.sent_id = last_id
            yield chunk


# -- the route -------------------------------------------------------------------------------------


TypeList = Annotated[
    str,
    msgspec.Meta(
        pattern=rf"^({'|'.join(re.escape(t) for t in TYPES)})(,({'|'.join(re.escape(t) for t in TYPES)}))*$",
        description="Only these event types, comma-separated.",
        examples=["session.status,message.received"],
    ),
]
EventId = Annotated[int, msgspec.Meta(ge=0, le=MAX_EVENT_ID, description="An event id from the log.")]


class EventsQuery(msgspec.Struct, forbid_unknown_fields=True):
    session_id: Annotated[SessionId | None, msgspec.Meta(description="Only this session's events.")] = None
    types: TypeList | None = None
    after: Annotated[
        EventId | None,
        msgspec.Meta(description="Replay the events after this id first (Last-Event-ID wins)."),
    ] = None


class EventsHeaders(msgspec.Struct):
    last_event_id: Annotated[
        EventId | None, msgspec.Meta(description="Resume: replay the events after this id, then go live.")
    ] = None


def live_events() -> LiveEvents:
    live = current_app.extensions.get("waservice.live")
    if live is None:
        raise RuntimeError("the app was created without the event log (create_app(..., live=...))")
    return live


def _query() -> tuple[EventFilter, int | None]:
    args = request.args
    extra = next((name for name in args if name not in ("session_id", "types", "after")), None)
    if extra is not None:
        raise InvalidRequest(f"unexpected query parameter '{extra}': use session_id, types and after")
    # A session key follows its own session, and no other.
    who = caller()
    session_id = args.get("session_id") or who.session_id
    if session_id is not None and not who.may_act_on(session_id):
        raise Forbidden(f"this key acts on session '{who.session_id}' only, not on '{session_id}'")
    wanted = EventFilter(
        None if session_id is None else validate_session_id(session_id), parse_types(args.get("types"))
    )
    resume = request.headers.get("Last-Event-ID")
    if resume is not None:  # a reconnect's own position beats the ?after= of the first request
        return wanted, parse_event_id(resume, "Last-Event-ID")
    after = args.get("after")
    return wanted, None if after is None else parse_event_id(after, "after")


@bp.get("/events")
@tag(["Events"])
@document_querystring(EventsQuery)
@document_headers(EventsHeaders)
@errors(400, 401, 403, 503)
@filtered_by_caller
async def events() -> Response:
    """The live event stream (Server-Sent Events), with replay from an event id.

    Each event is `id:` (its log id), `event:` (its type) and `data:` (the envelope, one line of
    JSON). With `Last-Event-ID` (or `?after=`) the stream first replays the logged events after that
    id, then continues live; without either it carries only new events. A `: keepalive` comment
    comes every 15 s on a quiet stream. A reader too slow to keep up gets `event: overflow` with the
    reason and is disconnected: reconnect with the last id received."""
    live = live_events()
    wanted, after = _query()
    if live.open >= live.config.max_subscribers:
        raise TooManyStreams(f"{live.open} event streams are open (stream.max_subscribers); retry later")
    body = b"" if request.method == "HEAD" else live.stream(wanted, after)
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    response.timeout = None  # quart's RESPONSE_TIMEOUT would end every stream after 60 s
    return response


EVENT_STREAM_EXAMPLE = (
    "retry: 3000\n: events after id 41\n\n"
    'id: 42\nevent: session.status\ndata: {"id":42,"type":"session.status","session_id":"default",'
    '"timestamp":"2026-11-28T19:40:00.123Z","data":{"state":"qr_ready","previous_state":"connecting",'
    '"reason":null,"phone":null,"reconnect_attempts":0}}\n\n'
    ": keepalive\n\n"
)


def document_event_stream(paths: dict) -> None:
    """quart-schema documents JSON answers only: the stream's 200 is text/event-stream."""
    operation = paths.get("/events", {}).get("get")
    if operation is None:
        return
    operation.setdefault("responses", {})[200] = {  # int keys until serialised
        "description": (
            "An endless text/event-stream. Each `data:` is an event envelope, one line of JSON: "
            "`{id, type, session_id, timestamp, data}`."
        ),
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": EVENT_STREAM_EXAMPLE,
            }
        },
    }
