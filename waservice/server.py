"""Run the service: the session manager and hypercorn in one trio run, stopped by SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import math
import signal

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from .api.app import create_app
from .config import Config
from .engine import create_engine
from .sessions.machine import ReconnectPolicy
from .sessions.manager import SessionManager
from .store import open_store

log = logging.getLogger("waservice")

SESSION_STOP_FLOOR = 3.0  # seconds the sessions always get to stop, even after a long request drain


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_forever(
    config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until SIGINT/SIGTERM; then stop taking requests and stop every session cleanly."""
    engine = create_engine(config.sessions.engine)
    r = config.reconnect
    policy = ReconnectPolicy(r.initial_delay, r.factor, r.max_delay, r.max_attempts)

    hconfig = HypercornConfig()
    hconfig.bind = [_bind(config.server.host, config.server.port)]
    hconfig.graceful_timeout = config.server.shutdown_grace
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")

    stop = _StopRequest()
    async with open_store(config.data_dir) as store:
        manager = SessionManager(engine, store, policy, max_sessions=config.sessions.max)
        app = create_app(manager, config.server.api_key, config.server.allowed_hosts)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_wait_for_signal, stop)
            await nursery.start(manager.run)
            await serve(app, hconfig, shutdown_trigger=stop.event.wait, task_status=task_status)
            # One deadline for the whole shutdown; sessions get a few seconds even when requests
            # used up the grace, so that each client can save its state.
            now = trio.current_time()
            deadline = max(min(stop.at, now) + config.server.shutdown_grace, now + SESSION_STOP_FLOOR)
            log.info("stopping %d session(s)", len(manager.sessions()))
            await manager.stop(deadline)
            nursery.cancel_scope.cancel()
    log.info("stopped")


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
