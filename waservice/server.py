"""Run the service: the session manager and hypercorn in one trio run, stopped by SIGINT/SIGTERM."""

from __future__ import annotations

import functools
import gc
import logging
import math
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio import serve
from quart_trio import QuartTrio

from .api.app import create_app
from .api.asgi import ServerSafeSend
from .api.idempotency import IdempotencyKeys
from .api.limits import install_create_limit
from .api.stream import LiveEvents
from .config import Config
from .engine import open_engine
from .engine.launch import HeadStart
from .events.hub import EventHub
from .events.model import Activity
from .events.recorder import EventRecorder
from .events.retention import prune_forever
from .hypercorn_close import close_without_send_eof
from .metrics import Metrics
from .sessions.machine import ReconnectPolicy
from .sessions.manager import SessionManager
from .sessions.sendqueue import Pacing
from .store import EventStore, SessionStore, open_event_store, open_store
from .store.messages import MessageIndex
from .store.webhooks import WebhookTables
from .tcp import quiet_accept_errors, tune_listener
from .webhooks.service import run_webhooks

if TYPE_CHECKING:
    from .cluster.service import Cluster

log = logging.getLogger("waservice")

SESSION_STOP_FLOOR = 3.0  # seconds the sessions always get to stop, even after a long request drain


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_forever(
    config: Config,
    *,
    head_start: HeadStart | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT/SIGTERM; then stop taking requests and stop every session cleanly.
    `head_start`: engine workers launched already (engine/launch.py)."""
    _fix_server_libraries()
    r = config.reconnect
    sending = config.sending
    policy = ReconnectPolicy(r.initial_delay, r.factor, r.max_delay, r.max_attempts)

    stop = _StopRequest()
    async with _session_store(config) as (store, cluster), _event_store(config, cluster) as event_store:
        metrics = Metrics()
        hub = EventHub(await event_store.last_id())
        events = None if cluster is None else cluster.events(event_store, hub)  # type: ignore[arg-type]
        # In a cluster every node appends: the hub hears of all of them, in id order, from the follower.
        recorder = EventRecorder(event_store, hub if events is None else events.follower, metrics=metrics)
        metrics.level("waservice_event_log_pending", "Events waiting to be logged", lambda: recorder.pending)
        # Before anything is logged: every append records its webhook deliveries in its transaction.
        if events is None:
            webhook_tables = await event_store.call(WebhookTables, event_store.connection)
            messages = await MessageIndex.open(event_store)  # indexes each received message as it is logged
        else:
            webhook_tables = events.webhook_tables
            messages = await MessageIndex.open(event_store, events.message_table)
        event_store.add_outbox(webhook_tables.outbox)
        if cluster is None:
            idempotency = await IdempotencyKeys.open(event_store)
        else:
            idempotency = cluster.idempotency()
        async with trio.open_nursery() as background:
            if cluster is not None:
                await background.start(cluster.run)
            if events is not None:
                await background.start(events.follow)
            background.start_soon(prune_forever, event_store, config.events.retention_days)
            background.start_soon(messages.prune_forever, config.events.retention_days)
            background.start_soon(messages.run)
            background.start_soon(idempotency.prune_forever)
            await background.start(recorder.run)
            webhooks = await background.start(
                functools.partial(
                    run_webhooks,
                    event_store,
                    webhook_tables,
                    hub,
                    config.webhooks_delivery,
                    config.webhooks,
                    metrics=metrics,
                    claims=None if events is None else events.claims,
                )
            )
            if events is not None:
                background.start_soon(events.relay_pokes, webhooks.dispatcher)
            async with open_engine(
                config.sessions.engine,
                config.engine,
                recorder.sink,
                events=config.events,
                devices=None if cluster is None else cluster.devices(),
                head_start=head_start,
            ) as engine:
                manager = SessionManager(
                    engine,
                    store,  # type: ignore[arg-type]  # a ClusterSessionStore is one, on PostgreSQL
                    policy,
                    max_sessions=config.sessions.max,
                    record=recorder.record
                    if cluster is None
                    else _both(recorder.record, cluster.node.record),
                    still_mine=None if cluster is None else cluster.node.still_mine,
                    metrics=metrics,
                    pacing=Pacing(sending.min_interval, sending.jitter, sending.typing),
                    queue_size=sending.queue_size,
                )
                metrics.level(
                    "waservice_send_queue_depth",
                    "Messages in the sessions' send queues: waiting, or being sent",
                    lambda: sum(s.queue_depth for s in manager.sessions()),
                )
                live = LiveEvents(event_store, hub, config.stream)
                metrics.level("waservice_sse_subscribers", "Open GET /events streams", lambda: live.open)
                forwarding = None if cluster is None else cluster.forwarding()
                app = create_app(
                    manager,
                    config.server.api_key,
                    config.server.allowed_hosts,
                    webhook_service=webhooks,
                    metrics=config.metrics,
                    live=live,
                    messages=messages,
                    media_config=config.media,
                    check_number=config.messages.check_number,
                    idempotency=idempotency,
                    cluster=cluster,
                    forwarding=forwarding,
                )
                _bound_load(app, config)
                _freeze_startup_objects()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_wait_for_signal, stop)
                    # Open event streams end at the signal: they would hold hypercorn's drain.
                    nursery.start_soon(live.close_when, stop.event)
                    if forwarding is not None:  # and so do those relayed from other nodes
                        nursery.start_soon(forwarding.close_when, stop.event)
                    # Keyed sends that would finish after their client left must not hold it up either.
                    nursery.start_soon(idempotency.finishing.release_when, stop.event)
                    # Serving starts while the sessions are restored: /ready says so, other routes wait.
                    nursery.start_soon(manager.run)
                    node_scope = trio.CancelScope()
                    if cluster is not None:
                        nursery.start_soon(_in_scope, node_scope, cluster.node.run, manager)
                    await serve(
                        ServerSafeSend(app),
                        _hypercorn_config(config),
                        shutdown_trigger=stop.event.wait,
                        task_status=task_status,
                    )
                    # One deadline for the whole shutdown; sessions get a few seconds even when
                    # requests used up the grace, so that each client can save its state.
                    now = trio.current_time()
                    deadline = max(min(stop.at, now) + config.server.shutdown_grace, now + SESSION_STOP_FLOOR)
                    node_scope.cancel()  # takes no session from now on
                    log.info("stopping %d session(s)", len(manager.sessions()))
                    await manager.stop(deadline)
                    if cluster is not None:  # the others take the sessions over now, not at lease end
                        await cluster.node.leave()
                    nursery.cancel_scope.cancel()
            # The engine is closed: nothing reports any more. Log what is still buffered.
            await recorder.finish()
            await messages.flush()  # the messages sent last, not yet indexed
            background.cancel_scope.cancel()  # the pruner and webhook delivery (resumed at next start)
        if events is not None:
            await events.leave()
    log.info("stopped")


@asynccontextmanager
async def _session_store(config: Config) -> AsyncIterator[tuple[SessionStore, Cluster | None]]:
    """The SQLite session store (one node), or this node's share of a cluster on PostgreSQL."""
    if not config.database.url:
        async with open_store(config.data_dir) as store:
            yield store, None
        return
    from .cluster.service import open_cluster  # psycopg is loaded only for a cluster

    async with open_cluster(config) as cluster:
        yield cluster.store, cluster  # type: ignore[misc]  # the same interface, on PostgreSQL


@asynccontextmanager
async def _event_store(config: Config, cluster: Cluster | None) -> AsyncIterator[EventStore]:
    """The event log in waservice.db (one node), or the cluster's in PostgreSQL."""
    if cluster is None:
        async with open_event_store(config.data_dir) as store:
            yield store
        return
    from .cluster.events import open_events

    async with open_events(config) as store:
        yield store  # type: ignore[misc]  # the same interface, on PostgreSQL


def _both(
    first: Callable[[Activity], None], second: Callable[[Activity], None]
) -> Callable[[Activity], None]:
    def both(activity: Activity) -> None:
        first(activity)
        second(activity)

    return both


async def _in_scope(scope: trio.CancelScope, fn: Callable[..., Awaitable[object]], *args: object) -> None:
    with scope:
        await fn(*args)


def _freeze_startup_objects() -> None:
    """Exempt what start-up made (modules, the app, the routes: some 70,000 objects that live as
    long as the process) from the collector's full passes. Restoring 1,000 sessions ran three full
    passes that walked them all, 140-180 ms each, every request and session paused; 15-40 ms each
    with them frozen (measured)."""
    gc.collect()
    gc.freeze()


def _fix_server_libraries() -> None:
    """Process-wide, idempotent: hypercorn's and trio's behaviour on a bad day."""
    close_without_send_eof()  # else a client leaving mid-answer can end the server
    quiet_accept_errors()  # out of fds: one log line, not ten tracebacks a second


def _bound_load(app: QuartTrio, config: Config) -> None:
    app.config["BODY_TIMEOUT"] = config.server.body_timeout  # then 408, and the connection is closed
    install_create_limit(app, config.server.create_rate, config.server.create_burst)


class _TunedConfig(HypercornConfig):
    """Hypercorn's settings, with our TCP options set on the listening sockets it creates."""

    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        for sock in sockets.insecure_sockets:
            tune_listener(sock)
        return sockets


def _hypercorn_config(config: Config) -> HypercornConfig:
    hconfig = _TunedConfig()
    hconfig.bind = [_bind(config.server.host, config.server.port)]
    # Idle keep-alive connections close after this; it also bounds the time to send a request's
    # headers (hypercorn's idle timer runs until they are complete, on every request of a connection).
    hconfig.keep_alive_timeout = config.server.keep_alive_timeout
    # On SIGTERM idle connections close at once; in-flight requests get this long to finish.
    hconfig.graceful_timeout = config.server.shutdown_grace
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    return hconfig


class _StopRequest:
    def __init__(self) -> None:
        self.event = trio.Event()
        self.at = math.inf  # trio time of the signal

    def set(self) -> None:
        self.at = trio.current_time()
        self.event.set()


async def _wait_for_signal(stop: _StopRequest) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop.set()
            return
