"""`waservice` / `python -m waservice`: parse arguments, load configuration, serve."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import trio

from . import __version__
from .config import Config, ConfigError, load_config
from .engine.launch import head_start
from .logs import setup_logging
from .store import CorruptRegistry

# Exit codes: 0 stopped by a signal, 1 cannot start (e.g. the port is taken), 2 bad configuration,
# 65 (EX_DATAERR) the session registry is unreadable. systemd does not restart after 2 or 65
# (RestartPreventExitStatus in deploy/waservice.service): a restart loop would not fix either.
EXIT_CONFIG = 2
EXIT_CORRUPT_DATA = 65


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="waservice", description="Multi-session WhatsApp REST API")
    parser.add_argument("--config", type=Path, help="TOML configuration file (default: built-in defaults)")
    parser.add_argument("--version", action="version", version=f"waservice {__version__}")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"waservice: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.logging.level, config.logging.format, config.logging.engine_level)
    log = logging.getLogger("waservice")
    log.info(
        "waservice %s on http://%s:%d (engine %s, data %s, api key %s%s)",
        __version__,
        config.server.host,
        config.server.port,
        config.sessions.engine,
        config.data_dir.resolve(),
        "required" if config.server.api_key else "off, loopback only",
        ", cluster on PostgreSQL" if config.database.url else "",
    )
    exit_code = 0
    try:
        trio.run(_serve, config)
    except* CorruptRegistry as group:  # restarting cannot help: say what to do, and stop
        log.error("cannot start: %s", _first(group))
        exit_code = EXIT_CORRUPT_DATA
    except* OSError as group:  # e.g. the port is taken; arrives wrapped by the nursery
        log.error("cannot start: %s", _first(group))
        exit_code = 1
    # Every session is stopped by now. A Go client stopped while showing a QR code finishes on its
    # own non-daemon thread up to minutes later; nothing of it needs saving, so do not wait for it.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(exit_code)


async def _serve(config: Config) -> None:
    # The engine workers start first: they load Go while this process imports its web stack.
    async with head_start(config.sessions.engine, config.engine, config.events) as early:
        from .server import serve_forever

        await serve_forever(config, head_start=early)


def _first(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


if __name__ == "__main__":
    sys.exit(main())
