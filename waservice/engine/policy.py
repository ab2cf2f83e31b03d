"""The worker pool's decisions, pure: which worker a session goes to, when a worker is recycled,
how long a crashing worker waits before its restart, and what its sessions are told."""

from __future__ import annotations

import signal
from collections.abc import Iterable, Sequence

import attrs

STABLE_AFTER = 60.0  # a worker that lived this long was not crash-looping


def pick_worker(loads: Sequence[int]) -> int:
    """Least-loaded worker, lowest index on a tie.

    Assignment is sticky (a session stays on its worker for the life of the service, across that
    worker's restarts): a device must never have two live clients, and a restarted worker takes
    its sessions back. Least-loaded rather than a hash keeps workers even when sessions come and go.
    """
    return min(range(len(loads)), key=lambda i: (loads[i], i))


FDS_PER_CLIENT = 8  # a connected client's socket and SQLite files, with room to spare


@attrs.frozen
class Usage:
    open_fds: int
    rss_mb: float
    abandoned: int
    clients: int = 0  # live connection attempts on the worker
    stale_stores: int = 0  # device stores Go keeps open for attempts that are over


@attrs.frozen
class Limits:
    max_leaked_fds: int  # open files beyond FDS_PER_CLIENT per live client
    max_rss_mb: float
    max_abandoned: int
    # A shared device store (PostgreSQL): each stale store keeps its connections to the server, whose
    # own limit (max_connections, 100 by default) is far below max_leaked_fds. None: no such limit.
    max_stale_stores: int | None = None


def recycle_reason(usage: Usage, limits: Limits) -> str | None:
    """Why a worker should be replaced gracefully, or None."""
    fd_limit = limits.max_leaked_fds + FDS_PER_CLIENT * usage.clients
    if usage.open_fds > fd_limit:
        return f"{usage.open_fds} open files > {fd_limit} for {usage.clients} clients"
    if usage.rss_mb > limits.max_rss_mb:
        return f"{usage.rss_mb:.0f} MB resident > {limits.max_rss_mb:.0f} MB"
    if usage.abandoned > limits.max_abandoned:
        return f"{usage.abandoned} abandoned QR-phase clients > {limits.max_abandoned}"
    if limits.max_stale_stores is not None and usage.stale_stores > limits.max_stale_stores:
        return (
            f"{usage.stale_stores} device stores of past attempts keep their database connections"
            f" > {limits.max_stale_stores}"
        )
    return None


@attrs.define
class RestartBackoff:
    """A crash restarts at once; crashes soon after a start back off: delay, 2*delay, ... max."""

    delay: float
    max_delay: float
    stable_after: float = STABLE_AFTER
    crashes: int = 0  # consecutive crashes of short-lived workers

    def after_exit(self, lived: float, crashed: bool) -> float:
        if not crashed or lived >= self.stable_after:
            self.crashes = 0
            return 0.0
        self.crashes += 1
        if self.crashes == 1:
            return 0.0
        return min(self.delay * 2 ** (self.crashes - 2), self.max_delay)


def exit_description(returncode: int | None) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


GO_FAULT_PREFIXES = ("panic:", "fatal error:", "SIGSEGV", "SIGABRT", "runtime:", "unexpected signal")


def fault_line(stderr_tail: Iterable[str]) -> str | None:
    """The first line of a Go panic or fatal error in a worker's last stderr lines."""
    for line in stderr_tail:
        if line.startswith(GO_FAULT_PREFIXES):
            return line.strip()
    return None


def death_reason(index: int, returncode: int | None, stderr_tail: Iterable[str]) -> str:
    """What a session on a dead worker shows, e.g.
    "engine worker 2 exited (SIGABRT): panic: runtime error: invalid memory address"."""
    reason = f"engine worker {index} exited ({exit_description(returncode)})"
    fault = fault_line(stderr_tail)
    return f"{reason}: {fault}" if fault else reason
