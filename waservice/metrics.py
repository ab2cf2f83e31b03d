"""Prometheus metrics: one registry per session manager (never the process-wide default one, so
that tests can build many apps), served by `GET /metrics` (api/ops.py).

Two kinds, and how to add one (one line each):
- Something that happens (a count, a duration): declare it in `Metrics.__init__` with
  `registry=self.registry` and call it where it happens, through the manager's `metrics`:
      self.webhook_deliveries = Counter("waservice_webhook_deliveries", "...", ["outcome"], registry=r)
      manager.metrics.webhook_deliveries.labels("ok").inc()
- A level some object already knows (a queue depth, SSE subscribers, leases held): read it at
  scrape time instead of keeping a copy in sync:
      manager.metrics.level("waservice_sse_subscribers", "Open /events streams", lambda: len(hub))
  For a level per label (per worker, per node) write a collector like `SessionCollector` and
  `manager.metrics.add(name, collector)` it.

Labels stay bounded: reasons are reduced to `REASON_CLASSES`; a session id appears only on the
per-session gauges, and only while there are fewer than `[metrics] per_session_max` sessions.
Keep the README's list of metrics current when adding one.
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .errors import SendFailed, SendOutcomeUnknown, SendQueueFull, ServiceError, SessionNotConnected

__all__ = ["REASON_CLASSES", "Metrics", "reason_class", "restart_cause"]

# Why a session left a state or retries, as a small fixed set; the first rule whose words appear
# in the (lower-cased) reason wins, so the specific ones come first.
_REASON_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("replaced", ("replaced",)),
    ("logged_out", ("logged out",)),
    ("qr_expired", ("qr code expired",)),
    ("banned", ("banned",)),
    ("outdated", ("outdated",)),
    ("refused", ("whatsapp refused",)),
    ("worker", ("engine worker", "engine error")),
    ("stream_error", ("stream error", "stream:error")),
    (
        "network",
        ("timed out", "timeout", "network", "connection", "dial", "eof", "websocket", "unreachable", "reset"),
    ),
)
REASON_CLASSES = ("none", *(name for name, _ in _REASON_RULES), "other")

# Why a worker process was restarted, from the start of the pool's reason text (engine/pool.py);
# only the start is read, since a crash's text ends with the worker's stderr.
_RESTART_PATTERN = re.compile(
    r"engine worker \d+ (could not start|did not answer a ping|was recycled \((.*)\))"
)
_RECYCLE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("recycled_fds", ("open files",)),
    ("recycled_rss", ("mb resident",)),
    ("recycled_abandoned", ("abandoned",)),
    ("recycled_stores", ("device stores",)),
)
RESTART_CAUSES = (
    "crashed",
    "start_failed",
    "unresponsive",
    *(name for name, _ in _RECYCLE_RULES),
    "recycled",
)

SEND_OUTCOMES = ("accepted", "failed", "outcome_unknown", "not_connected")
# Seconds from the request to WhatsApp's acknowledgement; whatsmeow gives up at 75 s.
SEND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 75.0)
DURABLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0, 3600.0, 86400.0)
WEBHOOK_OUTCOMES = ("ok", "retried", "dead")


def _classify(text: str | None, rules: Sequence[tuple[str, tuple[str, ...]]], default: str) -> str:
    if not text:
        return "none"
    lowered = text.lower()
    for name, words in rules:
        if any(word in lowered for word in words):
            return name
    return default


def reason_class(reason: str | None) -> str:
    """'stream error 503' -> 'stream_error'; None -> 'none'; unknown text -> 'other'."""
    return _classify(reason, _REASON_RULES, "other")


def restart_cause(reason: str) -> str:
    """'engine worker 0 was recycled (900 open files > 532 ...)' -> 'recycled_fds'."""
    match = _RESTART_PATTERN.match(reason)
    if match is None:
        return "crashed"
    if match.group(2) is not None:
        return _classify(match.group(2), _RECYCLE_RULES, "recycled")
    return "start_failed" if match.group(1) == "could not start" else "unresponsive"


def send_outcome(error: ServiceError) -> str | None:
    """How a send ended, from its error; None if it never reached a session (e.g. unknown id)."""
    if isinstance(error, SessionNotConnected):
        return "not_connected"
    if isinstance(error, SendQueueFull):
        return "queue_full"
    if isinstance(error, SendOutcomeUnknown):
        return "outcome_unknown"
    return "failed" if isinstance(error, SendFailed) else None


class Metrics:
    """The counters the service keeps, in its own registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._collectors: set[str] = set()
        ProcessCollector(registry=r)  # the service process's own CPU, memory and open fds
        self.state_changes = Counter(
            "waservice_session_state_changes",
            "Session state changes, by the new state and the class of the reason it gives",
            ["state", "reason"],
            registry=r,
        )
        self.reconnects = Counter(
            "waservice_reconnect_attempts",
            "Reconnect attempts scheduled after a lost connection, by reason class",
            ["reason"],
            registry=r,
        )
        self.sends = Counter(
            "waservice_sends", "Text sends that reached a session, by outcome", ["outcome"], registry=r
        )
        self.send_seconds = Histogram(
            "waservice_send_seconds",
            "Time from a send request to WhatsApp's acknowledgement (or its failure)",
            buckets=SEND_BUCKETS,
            registry=r,
        )
        self.qr_codes = Counter("waservice_qr_codes", "QR codes issued to sessions", registry=r)
        self.events_logged = Counter(
            "waservice_events_logged", "Events appended to the durable log, by type", ["type"], registry=r
        )
        self.event_durable_seconds = Histogram(
            "waservice_event_durable_seconds",
            "Time from the engine receiving an event to its log append being fsynced",
            buckets=DURABLE_BUCKETS,
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "waservice_webhook_deliveries",
            "Webhook delivery attempts, by outcome: ok, retried (a retry is scheduled) or dead",
            ["outcome"],
            registry=r,
        )
        self.webhook_lag_seconds = Histogram(
            "waservice_webhook_delivery_lag_seconds",
            "Time from an event happening to its webhook answering 2xx",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        for reason in REASON_CLASSES:  # every series exists from the start: rate() needs a zero
            self.reconnects.labels(reason)
        for outcome in SEND_OUTCOMES:
            self.sends.labels(outcome)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome)

    def level(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read at scrape time from whatever already knows the value."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def add(self, name: str, collector: Collector) -> None:
        """Register a collector once (an app built twice on one manager adds it once)."""
        if name not in self._collectors:
            self._collectors.add(name)
            self.registry.register(collector)

    # -- hooks (one call at the place where it happens) -------------------------------------------

    def state_changed(self, state: str, reason: str | None) -> None:
        self.state_changes.labels(state, reason_class(reason)).inc()

    def reconnect_scheduled(self, reason: str | None) -> None:
        self.reconnects.labels(reason_class(reason)).inc()

    def qr_issued(self) -> None:
        self.qr_codes.inc()

    def events_durable(self, types: Sequence[str], received: Sequence[float], now: float) -> None:
        """A batch is in the log: `types` of what was new, `received` of everything in the batch."""
        for type_ in types:
            self.events_logged.labels(type_).inc()
        for at in received:
            self.event_durable_seconds.observe(max(0.0, now - at))

    def webhook_attempted(self, outcome: str, lag: float | None) -> None:
        self.webhook_deliveries.labels(outcome).inc()
        if lag is not None:
            self.webhook_lag_seconds.observe(max(0.0, lag))

    @contextmanager
    def timing_send(self) -> Iterator[None]:
        """Count a send that reached a session, and time it."""
        start = time.perf_counter()
        try:
            yield
        except ServiceError as exc:
            outcome = send_outcome(exc)
            if outcome is not None:
                self.sends.labels(outcome).inc()
                if outcome not in ("not_connected", "queue_full"):  # it never reached WhatsApp
                    self.send_seconds.observe(time.perf_counter() - start)
            raise
        self.sends.labels("accepted").inc()
        self.send_seconds.observe(time.perf_counter() - start)


# -- read at scrape time ----------------------------------------------------------------------------


class SessionCollector(Collector):
    """Sessions by state, and per session (below `per_session_max` sessions) its state and attempts."""

    def __init__(
        self,
        sessions: Callable[[], Sequence[tuple[str, str, int]]],  # (id, state, reconnect attempts)
        states: Sequence[str],
        per_session_max: int,
    ) -> None:
        self._sessions = sessions
        self._states = tuple(states)
        self._per_session_max = per_session_max

    def collect(self) -> Iterator[Metric]:
        sessions = self._sessions()
        counts = collections.Counter(state for _, state, _ in sessions)
        by_state = GaugeMetricFamily("waservice_sessions", "Sessions by state", labels=["state"])
        for state in self._states:
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state
        if len(sessions) >= self._per_session_max:
            return  # a label per session would grow without bound
        states = GaugeMetricFamily(
            "waservice_session_state", "1 for each session's current state", labels=["session_id", "state"]
        )
        attempts = GaugeMetricFamily(
            "waservice_session_reconnect_attempts",
            "Reconnect attempts of each session since it last connected",
            labels=["session_id"],
        )
        for session_id, state, tries in sessions:
            states.add_metric([session_id, state], 1)
            attempts.add_metric([session_id], tries)
        yield states
        yield attempts


class _WorkerStats(Protocol):
    index: int
    state: str
    sessions: int
    open_fds: int
    rss_mb: float


class WorkerCollector(Collector):
    """Per engine worker process: up, sessions, open fds, RSS; and restarts by cause."""

    def __init__(
        self, stats: Callable[[], Sequence[_WorkerStats]], restarts: Callable[[], dict[str, int]]
    ) -> None:
        self._stats = stats
        self._restarts = restarts

    def collect(self) -> Iterator[Metric]:
        families = {
            "up": GaugeMetricFamily("waservice_worker_up", "1 while the worker runs", labels=["worker"]),
            "sessions": GaugeMetricFamily(
                "waservice_worker_sessions", "Sessions placed on the worker", labels=["worker"]
            ),
            "fds": GaugeMetricFamily(
                "waservice_worker_open_fds", "Open file descriptors of the worker", labels=["worker"]
            ),
            "rss": GaugeMetricFamily(
                "waservice_worker_resident_memory_bytes", "Resident memory of the worker", labels=["worker"]
            ),
        }
        for worker in self._stats():
            label = [str(worker.index)]
            families["up"].add_metric(label, 1 if worker.state == "running" else 0)
            families["sessions"].add_metric(label, worker.sessions)
            families["fds"].add_metric(label, worker.open_fds)
            families["rss"].add_metric(label, worker.rss_mb * 1024 * 1024)
        yield from families.values()
        restarts = CounterMetricFamily(
            "waservice_worker_restarts", "Engine worker restarts, by cause", labels=["cause"]
        )
        counts = self._restarts()
        for cause in RESTART_CAUSES:
            restarts.add_metric([cause], counts.get(cause, 0))
        yield restarts
