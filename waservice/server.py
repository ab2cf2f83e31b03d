"""Run the service: the session manager and hypercorn in one trio run, stopped by SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from .api.app import create_app
from .config import Config
from .engine import open_engine
from .sessions.machine import ReconnectPolicy
from .sessions.manager import SessionManager
from .store import SessionStore

log = logging.getLogger("waservice")


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_forever(
    config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until SIGINT/SIGTERM; then stop taking requests and stop every session cleanly."""
    store = SessionStore(config.data_dir)
    r = config.reconnect
    policy = ReconnectPolicy(r.initial_delay, r.factor, r.max_delay, r.max_attempts)

    hconfig = HypercornConfig()
    hconfig.bind = [_bind(config.server.host, config.server.port)]
    hconfig.graceful_timeout = config.server.shutdown_grace
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")

    stop = trio.Event()
    try:
        async with (
            open_engine(config.sessions.engine, config.engine) as engine,
            trio.open_nursery() as nursery,
        ):
            manager = SessionManager(engine, store, policy)
            app = create_app(manager, config.server.api_key)
            nursery.start_soon(_wait_for_signal, stop)
            await nursery.start(manager.run)
            await serve(app, hconfig, shutdown_trigger=stop.wait, task_status=task_status)
            log.info("stopping sessions")
            # The manager's cancellation stops each client cleanly (shielded, bounded per client).
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    log.info("stopped")


async def _wait_for_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop.set()
            return
