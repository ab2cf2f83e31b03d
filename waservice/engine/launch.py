"""Starting an engine worker process: its command, its sockets, its environment; and a head start.

A worker is `python -m waservice.engine.worker FD ACTIVITY_FD` (fork+exec: the API process never
loads neonize, and a process that has loaded it must never fork), with its ends of two socketpairs:
one for commands, replies and connection states, one for activity (see pool.py).

The head start launches the workers before the service imports its web stack: a worker needs
~0.25 s of CPU to import neonize and load Go, the API process ~0.35 s to import quart, hypercorn
and its routes, and until the workers are up no session can connect. Launched first, both happen
at once on separate CPUs (measured: the first of 1,000 restored sessions connected ~0.1 s sooner).
The pool adopts a launched worker for each of its slots' first start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import attrs
import trio

from ..config import EngineConfig, EventsConfig
from .worker import HISTORY_MESSAGES_ENV

log = logging.getLogger("waservice.engine.pool")


@attrs.define
class Launched:
    """A worker process that has been started, with the API's ends of its two sockets."""

    process: trio.Process
    stream: socket.socket
    activity: socket.socket

    async def discard(self) -> None:
        """Never adopted: kill it, close its sockets, reap it."""
        self.stream.close()
        self.activity.close()
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with trio.CancelScope(shield=True):
            await self.process.wait()
            if self.process.stderr is not None:
                await self.process.stderr.aclose()


async def launch(env: dict[str, str]) -> Launched:
    """Start one worker process (it reports Ready on its socket once Go is loaded)."""
    ours, theirs = socket.socketpair()
    activity_ours, activity_theirs = socket.socketpair()
    fds = (theirs.fileno(), activity_theirs.fileno())
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "waservice.engine.worker", *map(str, fds)],
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # Go writes there; the worker points fd 1 at /dev/null too
            stderr=subprocess.PIPE,
            env=env,
        )
    except BaseException:
        ours.close()
        activity_ours.close()
        raise
    finally:
        theirs.close()
        activity_theirs.close()
    return Launched(process, ours, activity_ours)


class HeadStart:
    """Workers launched early, each taken once by the pool."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env  # the pool launches its later workers with the same environment
        self._launched: list[Launched] = []

    @property
    def pids(self) -> list[int]:
        """The processes launched and not taken yet."""
        return [launched.process.pid for launched in self._launched]

    def take(self) -> Launched | None:
        return self._launched.pop(0) if self._launched else None

    async def _launch(self, count: int) -> None:
        for _ in range(count):
            try:
                self._launched.append(await launch(self.env))
            except OSError as exc:  # the pool tries again when it starts, and says why it cannot
                log.warning("could not start an engine worker ahead: %s", exc)
                return

    async def _discard(self) -> None:
        while (launched := self.take()) is not None:
            await launched.discard()


@contextlib.asynccontextmanager
async def head_start(
    kind: str, config: EngineConfig, events: EventsConfig, env: dict[str, str] | None = None
) -> AsyncIterator[HeadStart | None]:
    """Engine `kind`'s workers (see open_engine), launched now; those the pool has not taken by
    the end are killed (the service could not start). None for the fake engine."""
    if kind != "neonize":
        yield None
        return
    early = HeadStart(worker_environment(env, events))
    try:
        await early._launch(config.workers)
        yield early
    finally:
        await early._discard()


def worker_environment(
    extra: dict[str, str] | None = None, events: EventsConfig | None = None
) -> dict[str, str]:
    """The environment a worker starts with. Go reads it once, at process start, so Go-side
    settings must be in place at spawn; setting them later in Python does nothing."""
    env = dict(os.environ)  # SSL_CERT_FILE / SSL_CERT_DIR / PYTHONPATH are inherited
    env.update(extra or {})
    env[HISTORY_MESSAGES_ENV] = "1" if events is not None and events.history_messages else "0"
    # The worker logs at the levels this process logs at.
    env["WASERVICE_WORKER_LOG_LEVEL"] = _level_name("waservice.engine")
    env["WASERVICE_ENGINE_LOG_LEVEL"] = _level_name("whatsmeow")
    # Our users' messages are theirs, not a bot's: neonize tags every 1:1 message
    # `<bot biz_bot="1"/>` unless this is off.
    env["NEONIZE_BOT_TAG"] = "off"
    env.setdefault("GOTRACEBACK", "single")  # a panic prints its own goroutine, not all of them
    return env


def _level_name(logger: str) -> str:
    return logging.getLevelName(logging.getLogger(logger).getEffectiveLevel())
