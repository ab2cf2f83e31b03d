"""Delivers the outbox: one ordered lane per (webhook, session), each independent of the others.

A lane sends its oldest open delivery and moves on only once that one is final (ok or dead); while it
waits for a retry, later events of that session wait too (order per webhook and session). Lanes of other
sessions and other webhooks never wait for it. A lane exists while it has work: the dispatcher starts
lanes for new events (woken by the hub), at start for what a previous run left open, and on redeliver.

Every attempt's outcome is written (in batches shared by all lanes) before the lane goes on, so a
restart resumes where this run stopped; an attempt cut short by a crash is sent again.

In a cluster every node's dispatcher hears of every event; `LaneClaims` (cluster/lanes.py) lets one
node at a time deliver a lane: a lane holds its claim before it reads and before each attempt, the
claims of running lanes are renewed, and lanes with work are looked for now and then, to take over
those a dead node left.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

import attrs
import trio

from ..errors import StorageFailed
from ..events.hub import EventHub
from ..metrics import Metrics
from ..store import EventStore
from ..store.webhooks import DeliveryResult, Due, StoredWebhook, WebhookTables
from . import signing
from .schedule import Answered, Decision, RetryPolicy, Verdict, decide
from .sender import Sender

log = logging.getLogger("waservice.webhooks")
T = TypeVar("T")

CONCURRENCY = 64  # requests in flight over all lanes
# Requests in flight per webhook, as a share of CONCURRENCY: a receiver that hangs (each request
# waits out the timeout) with many sessions' lanes can take only this many places from the others.
WEBHOOK_SHARE = 4
BATCH = 32  # open deliveries a lane reads at a time: memory is lanes x this
PRUNE_INTERVAL = 600.0
STORAGE_RETRY = (0.1, 5.0)

DEFAULT_POLICY = RetryPolicy()

LaneKey = tuple[str, str]  # (webhook id, session id)


class LaneClaims(Protocol):
    """Who delivers which lane when several dispatchers share the tables (cluster/lanes.py)."""

    @property
    def interval(self) -> float:
        """Seconds between renewals; a claim lasts several of them."""
        ...

    async def hold(self, webhook_id: str, session_id: str) -> bool:
        """Take or extend the lane's claim; False if another dispatcher has it."""
        ...

    async def renew(self, lanes: Sequence[LaneKey]) -> set[LaneKey] | None:
        """Extend these claims; those still held, or None if nobody can tell (database down)."""
        ...


@attrs.define(eq=False)
class _Lane:
    key: LaneKey
    more: bool = True  # work may have arrived since the last read
    interrupt: trio.Event = attrs.Factory(trio.Event)  # re-read now (redeliver), even mid-wait
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    held_at: float | None = None  # trio time the lane's claim was last taken or renewed (cluster)


class Dispatcher:
    def __init__(
        self,
        store: EventStore,
        tables: WebhookTables,
        hub: EventHub,
        sender: Sender,
        policy: RetryPolicy = DEFAULT_POLICY,
        concurrency: int = CONCURRENCY,
        *,
        wall: Callable[[], float] = time.time,
        spread: Callable[[], float] = lambda: random.uniform(-1.0, 1.0),
        prune_interval: float | None = PRUNE_INTERVAL,
        metrics: Metrics | None = None,
        claims: LaneClaims | None = None,
    ) -> None:
        self.store = store
        self.tables = tables
        self.hub = hub
        self.sender = sender
        self.policy = policy
        self.metrics = metrics or Metrics()
        self._limiter = trio.CapacityLimiter(concurrency)
        self._per_webhook = max(1, concurrency // WEBHOOK_SHARE)
        self._webhook_limiters: dict[str, trio.CapacityLimiter] = {}
        self._wall = wall  # unix time; tests put it on trio's clock
        self._spread = spread
        self._prune_interval = prune_interval
        self._claims = claims
        self._writer = _ResultWriter(store, tables)
        self._lanes: dict[LaneKey, _Lane] = {}
        self._nursery: trio.Nursery | None = None
        self.attempts = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._writer.run)
            if self._prune_interval is not None:
                nursery.start_soon(self._prune_forever, self._prune_interval)
            if self._claims is not None:
                nursery.start_soon(self._share_lanes, self._claims)
            seen = self.hub.last_id  # events after this are new; those before are found by the query
            for key in await self._read(self.tables.lanes_with_work):
                self._wake(key)
            task_status.started()
            while True:
                await self.hub.wait_beyond(seen)
                upto = self.hub.last_id
                for key in await self._read(self.tables.lanes_with_work, None, (seen, upto)):
                    self._wake(key)
                seen = upto

    async def poke(self, webhook_id: str) -> None:
        """A webhook's deliveries changed (redeliver): its lanes re-read them now."""
        for key in await self._read(self.tables.lanes_with_work, webhook_id):
            self._wake(key, interrupt=True)

    def forget(self, webhook_id: str) -> None:
        """The webhook is gone: stop its lanes (an attempt in flight is abandoned)."""
        for key, lane in list(self._lanes.items()):
            if key[0] == webhook_id:
                lane.scope.cancel()
        self._webhook_limiters.pop(webhook_id, None)

    def _webhook_limiter(self, webhook_id: str) -> trio.CapacityLimiter:
        limiter = self._webhook_limiters.get(webhook_id)
        if limiter is None:
            limiter = self._webhook_limiters[webhook_id] = trio.CapacityLimiter(self._per_webhook)
        return limiter

    def lanes(self) -> int:
        return len(self._lanes)

    def _wake(self, key: LaneKey, interrupt: bool = False) -> None:
        lane = self._lanes.get(key)
        if lane is None:
            assert self._nursery is not None
            lane = self._lanes[key] = _Lane(key)
            self._nursery.start_soon(self._run_lane, lane)
        lane.more = True
        if interrupt:
            lane.interrupt.set()

    async def _run_lane(self, lane: _Lane) -> None:
        webhook_id, session_id = lane.key
        try:
            with lane.scope:
                while True:
                    if not await self._hold(lane, at_once=True):
                        return  # another node delivers it
                    lane.more = False
                    lane.interrupt = trio.Event()
                    webhook = await self._read(self.tables.get, webhook_id)
                    due: list[Due] = []
                    if webhook is not None:
                        due = await self._read(self.tables.due, webhook_id, session_id, BATCH)
                    if not due:
                        if lane.more and webhook is not None:
                            continue
                        return  # no await since the read: a wake-up after it set `more` and was seen
                    assert webhook is not None
                    for delivery in due:
                        if not await self._deliver(lane, webhook, delivery):
                            break  # interrupted: read again from the oldest open one
        finally:
            del self._lanes[lane.key]

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        """A read of the tables; while the disk refuses, retry calmly rather than drop the work."""
        delay = STORAGE_RETRY[0]
        while True:
            try:
                return await self.store.call(fn, *args)
            except StorageFailed as exc:
                log.warning("cannot read webhook deliveries, retrying in %.1f s: %s", delay, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, STORAGE_RETRY[1])

    async def _deliver(self, lane: _Lane, webhook: StoredWebhook, due: Due) -> bool:
        """Attempt until the delivery is final (True) or the lane is interrupted (False)."""
        key = signing.secret_key(webhook.secret)
        attempts, first, next_at = due.attempts, due.first_attempt_at, due.next_attempt_at
        while True:
            with trio.move_on_after(max(0.0, next_at - self._wall())):
                await lane.interrupt.wait()
                return False
            if not await self._hold(lane):
                return False  # the lane went to another node meanwhile: it sends this one
            started = self._wall()
            headers = signing.headers(key, due.event.id, int(started), due.body)
            async with self._webhook_limiter(webhook.id), self._limiter:
                outcome = await self.sender.post(webhook.url, headers, due.body)
            self.attempts += 1
            attempts += 1
            first = started if first is None else first
            decision = decide(self.policy, outcome, attempts, first, self._wall(), self._spread())
            await self._writer.write(_result(webhook.id, due.event.id, started, outcome, decision))
            self._count(decision.verdict, due.event.timestamp)
            if decision.verdict is not Verdict.RETRY:
                if decision.verdict is Verdict.DEAD:
                    log.warning(
                        "webhook %s: event %d dead after %d attempt(s): %s",
                        webhook.id,
                        due.event.id,
                        attempts,
                        decision.error,
                    )
                return True
            assert decision.next_attempt_at is not None
            next_at = decision.next_attempt_at

    async def _hold(self, lane: _Lane, at_once: bool = False) -> bool:
        """Whether this dispatcher may deliver the lane now (always, without claims). Before an
        attempt, a claim taken or renewed less than an interval ago is good for two more."""
        claims = self._claims
        if claims is None:
            return True
        now = trio.current_time()
        if not at_once and lane.held_at is not None and now - lane.held_at < claims.interval:
            return True
        if not await claims.hold(*lane.key):
            lane.held_at = None
            return False
        lane.held_at = now
        return True

    async def _share_lanes(self, claims: LaneClaims) -> None:
        """Keep the claims of the lanes this node runs (a lane waiting for a retry keeps its node),
        stop those another node took, and start lanes with work nobody holds: a dead node's, once
        its claims have run out, or any a lost wake-up left waiting."""
        while True:
            await trio.sleep(claims.interval)
            running = {key: lane for key, lane in self._lanes.items() if lane.held_at is not None}
            sent = trio.current_time()
            held = await claims.renew(list(running))
            if held is not None:
                for key, lane in running.items():
                    if key in held:
                        lane.held_at = sent
                    else:
                        log.warning("webhook lane %s/%s taken by another node: stopped here", *key)
                        lane.scope.cancel()
            for key in await self._read(self.tables.lanes_with_work):
                self._wake(key)

    def _count(self, verdict: Verdict, happened: str) -> None:
        if verdict is Verdict.OK:
            lag = self._wall() - datetime.fromisoformat(happened).timestamp()
            self.metrics.webhook_attempted("ok", lag)
        else:
            self.metrics.webhook_attempted("dead" if verdict is Verdict.DEAD else "retried", None)

    async def _prune_forever(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            try:
                while await self.store.call(self.tables.prune) > 0:
                    await trio.sleep(0)
            except StorageFailed as exc:
                log.warning("could not prune webhook deliveries: %s", exc)


def _result(
    webhook_id: str, event_id: int, started: float, outcome: object, decision: Decision
) -> DeliveryResult:
    return DeliveryResult(
        webhook_id=webhook_id,
        event_id=event_id,
        status=decision.verdict.value,
        attempted_at=started,
        next_attempt_at=decision.next_attempt_at or started,
        status_code=outcome.status if isinstance(outcome, Answered) else None,
        error=decision.error,
    )


class _ResultWriter:
    """Writes attempts' outcomes for all lanes, many per transaction (group commit): each lane waits
    for its own to be durable, and a burst of lanes pays for one fsync."""

    def __init__(self, store: EventStore, tables: WebhookTables) -> None:
        self._store = store
        self._tables = tables
        self._batch: list[DeliveryResult] = []
        self._written = trio.Event()
        self._ready = trio.Event()

    async def write(self, result: DeliveryResult) -> None:
        self._batch.append(result)
        written = self._written
        self._ready.set()
        await written.wait()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            batch, self._batch = self._batch, []
            written, self._written = self._written, trio.Event()
            await self._commit(batch)
            written.set()

    async def _commit(self, batch: list[DeliveryResult]) -> None:
        delay = STORAGE_RETRY[0]
        while True:
            try:
                await self._store.call(self._tables.record, batch)
                return
            except StorageFailed as exc:
                log.error("could not record %d delivery result(s), retrying: %s", len(batch), exc)
                await trio.sleep(delay)
                delay = min(delay * 2, STORAGE_RETRY[1])
