"""Run the service: the session manager and hypercorn in one trio run, stopped by SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio import serve
from quart_trio import QuartTrio

from .api.app import create_app
from .api.asgi import ServerSafeSend
from .api.limits import install_create_limit
from .config import Config
from .engine import create_engine
from .hypercorn_close import close_without_send_eof
from .sessions.machine import ReconnectPolicy
from .sessions.manager import SessionManager
from .store import SessionStore
from .tcp import quiet_accept_errors, tune_listener

log = logging.getLogger("waservice")


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_forever(
    config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until SIGINT/SIGTERM; then stop taking requests and stop every session cleanly."""
    engine = create_engine(config.sessions.engine)
    store = SessionStore(config.data_dir)
    r = config.reconnect
    policy = ReconnectPolicy(r.initial_delay, r.factor, r.max_delay, r.max_attempts)
    manager = SessionManager(engine, store, policy)
    app = create_app(manager, config.server.api_key)
    _bound_load(app, config)

    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_wait_for_signal, stop)
            await nursery.start(manager.run)
            await serve(
                ServerSafeSend(app),
                _hypercorn_config(config),
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
            log.info("stopping sessions")
            # The manager's cancellation stops each client cleanly (shielded, bounded per client).
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    log.info("stopped")


def _bound_load(app: QuartTrio, config: Config) -> None:
    app.config["BODY_TIMEOUT"] = config.server.body_timeout  # then 408, and the connection is closed
    install_create_limit(app, config.server.create_rate, config.server.create_burst)
    quiet_accept_errors()  # out of fds: one log line, not ten tracebacks a second


class _TunedConfig(HypercornConfig):
    """Hypercorn's settings, with our TCP options set on the listening sockets it creates."""

    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        for sock in sockets.insecure_sockets:
            tune_listener(sock)
        return sockets


def _hypercorn_config(config: Config) -> HypercornConfig:
    close_without_send_eof()  # else a client leaving mid-answer can end the server
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


async def _wait_for_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop.set()
            return
