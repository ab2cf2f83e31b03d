"""Make a copy of the installed neonize whose Go library talks to the simulator.

whatsmeow dials one fixed URL and trusts one fixed root key, both compiled into neonize's shared
library with no setting to change them. A Go string's length is stored apart from its bytes, so a
same-length replacement of each constant in a *copy* of the library is enough. The installed package
is never touched; the caller prepends the copy's directory to ``PYTHONPATH`` of the process that
imports neonize (never the pytest process itself).

The port is compiled into the copy, so each copy serves one port. ``lease_patched_neonize`` picks a
port that is free and not used by another test run, reusing a cached copy when one is idle, and holds
it (an ``flock``) until the run ends; the cache keeps at most ``CACHE_KEEP`` idle copies.
"""

from __future__ import annotations

import compileall
import contextlib
import fcntl
import importlib.util
import json
import os
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .noise import TEST_ROOT, WHATSAPP_ROOT_PUB

WHATSAPP_URL = b"wss://web.whatsapp.com/ws/chat"
_MARKER = "wasim-patch.json"
CACHE_KEEP = 4  # idle copies kept for reuse (about 25 MB each); older ones are deleted
STAGING_MAX_AGE = 3600.0  # seconds; a build takes well under a minute, so older staging is a killed run's
UNLEASED_MAX_AGE = 86400.0  # seconds; see _prune


class PatchError(RuntimeError):
    """The installed neonize cannot be patched (not found, or a needle is missing or repeated)."""


def simulator_url(port: int) -> bytes:
    """``ws://127.0.0.1:PORT/ws/chat`` padded with ``/`` to the original URL's 30 bytes."""
    if not 0 < port < 65536:
        raise PatchError(f"invalid port {port}")
    url = f"ws://127.0.0.1:{port}/ws/chat".encode()
    if len(url) > len(WHATSAPP_URL):
        raise PatchError(f"port {port} makes the URL longer than {len(WHATSAPP_URL)} bytes")
    return url + b"/" * (len(WHATSAPP_URL) - len(url))


def installed_neonize_dir() -> Path:
    """The installed neonize package directory, found without importing it.

    ``find_spec`` of a top-level package locates it but does not run its ``__init__`` (which would
    load the Go library into this process).
    """
    spec = importlib.util.find_spec("neonize")
    if spec is None or not spec.submodule_search_locations:
        raise PatchError("neonize is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations)))


def _library(package_dir: Path) -> Path:
    libraries = sorted(package_dir.glob("neonize-*.so"))
    if len(libraries) != 1:
        raise PatchError(f"expected one neonize-*.so in {package_dir}, found {[p.name for p in libraries]}")
    return libraries[0]


def _replace_once(data: bytes, needle: bytes, replacement: bytes, what: str) -> bytes:
    count = data.count(needle)
    if count != 1:
        raise PatchError(
            f"{what} occurs {count} times in the neonize library (expected exactly 1); "
            "this neonize build is not supported by the simulator patch"
        )
    assert len(needle) == len(replacement)
    return data.replace(needle, replacement)


def patch_library(data: bytes, port: int, root_pub: bytes = TEST_ROOT.pub) -> bytes:
    """The library bytes with the URL and the root key swapped (each needle must occur once)."""
    data = _replace_once(data, WHATSAPP_URL, simulator_url(port), "the WhatsApp websocket URL")
    return _replace_once(data, WHATSAPP_ROOT_PUB, root_pub, "WhatsApp's certificate root key")


def patched_neonize(
    cache_dir: Path, port: int, root_pub: bytes = TEST_ROOT.pub, source: Path | None = None
) -> Path:
    """Return a directory to prepend to ``PYTHONPATH`` so ``import neonize`` loads a patched copy.

    The copy of ``source`` (default: the installed neonize) lives in ``cache_dir/neonize-<port>/neonize/``
    and is reused while its marker records the same port, root key and source library (size and mtime);
    otherwise it is rebuilt.
    """
    source = installed_neonize_dir() if source is None else source
    source_lib = _library(source)
    stat = source_lib.stat()
    wanted = {
        "port": port,
        "root_pub": root_pub.hex(),
        "source": str(source_lib),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    target = Path(cache_dir) / f"neonize-{port}"
    marker = target / _MARKER
    if marker.exists():
        try:
            if json.loads(marker.read_text()) == wanted:
                return target
        except ValueError:
            pass
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    # Build next to the target and rename, so a concurrent or interrupted run never sees half a copy.
    staging = Path(tempfile.mkdtemp(prefix=f".neonize-{port}-", dir=cache_dir))
    try:
        package = staging / "neonize"
        shutil.copytree(source, package, ignore=shutil.ignore_patterns("__pycache__"))
        library = _library(package)
        library.write_bytes(patch_library(source_lib.read_bytes(), port, root_pub))
        # Compiled now, as pip compiles an installed package: else every worker compiles the
        # modules it imports at each start wherever bytecode is not written (PYTHONDONTWRITEBYTECODE).
        compileall.compile_dir(package, quiet=1)
        (staging / _MARKER).write_text(json.dumps(wanted))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# ------------------------------------------------------------------ leases: one port per test run


@dataclass(frozen=True)
class PatchedNeonize:
    """A patched copy and the simulator port compiled into it."""

    port: int
    path: Path  # put first on PYTHONPATH


def default_cache_dir() -> Path:
    return Path(os.environ.get("WASIM_CACHE_DIR") or Path(tempfile.gettempdir()) / "wasim-cache")


@contextlib.contextmanager
def lease_patched_neonize(
    cache_dir: Path | None = None,
    port: int | None = None,
    root_pub: bytes = TEST_ROOT.pub,
    source: Path | None = None,
) -> Iterator[PatchedNeonize]:
    """Hold a patched copy and its port for the duration of the block.

    Without ``port``, an idle cached copy whose port is free is reused, else a fresh free port gets a new
    copy. ``port`` (an override such as ``WASIM_PORT``) pins it. Either way no other run gets the same
    port while the block lasts (two simulators cannot share one). Idle copies beyond ``CACHE_KEEP``
    are deleted.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    if port is None:
        port, fd = _claim_free_port(cache_dir)
    else:
        held = _lock(cache_dir, port)
        if held is None:
            raise PatchError(
                f"port {port} is leased by another run ({_lock_path(cache_dir, port)} is locked)"
            )
        fd = held
    try:
        path = patched_neonize(cache_dir, port, root_pub, source)
        os.utime(path / _MARKER)  # marks the copy as the most recently used one
        _prune(cache_dir, CACHE_KEEP, in_use=port)
        yield PatchedNeonize(port, path)
    finally:
        os.close(fd)


def _lock_path(cache_dir: Path, port: int) -> Path:
    return cache_dir / f"neonize-{port}.lock"


def _lock(cache_dir: Path, port: int) -> int | None:
    """A non-blocking exclusive flock on the port's lock file (its fd), or None if another run holds it."""
    path = _lock_path(cache_dir, port)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # A pruning run may have unlinked the file between our open and flock: lock the current one.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)


def _unassigned_ports() -> range:
    """Ports below the kernel's ephemeral range: no outgoing connection is ever bound to one, so the
    simulator's listener cannot collide with a client socket of another test."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, low) if low > 11000 else range(20000, 30000)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As trio's listener does: connections left in TIME_WAIT do not block the bind.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cached_ports(cache_dir: Path) -> list[int]:
    """Ports with a copy or a lock file in the cache, most recently used copy first."""
    used: dict[int, float] = {}
    for path in cache_dir.glob("neonize-*"):
        name = path.name.removeprefix("neonize-").removesuffix(".lock")
        if name.isdigit():
            with contextlib.suppress(OSError):
                used[int(name)] = max(used.get(int(name), 0.0), (path / _MARKER).stat().st_mtime)
            used.setdefault(int(name), 0.0)
    return sorted(used, key=lambda port: used[port], reverse=True)


def _claim_free_port(cache_dir: Path) -> tuple[int, int]:
    """A free port and the exclusive lock on it; idle cached copies come first."""
    allowed = _unassigned_ports()
    rng = random.SystemRandom()  # independent of any seed a test sets
    fresh = (rng.randrange(allowed.start, allowed.stop) for _ in range(500))
    cached = (port for port in _cached_ports(cache_dir) if port in allowed)
    for port in (*cached, *fresh):
        fd = _lock(cache_dir, port)
        if fd is None:
            continue
        if _port_is_free(port):
            return port, fd
        if not (cache_dir / f"neonize-{port}").exists():
            _lock_path(cache_dir, port).unlink(missing_ok=True)  # not worth keeping
        os.close(fd)
    raise PatchError(f"no free port for the simulator in {allowed}")


def _prune(cache_dir: Path, keep: int, in_use: int) -> None:
    """Delete idle copies beyond the ``keep`` most recently used, and staging left by killed runs.

    A copy without a lock file was made by a harness that did not lease (an older checkout, maybe
    running now): it is left alone until it is a day old.
    """
    idle = 0
    for port in _cached_ports(cache_dir):
        copy = cache_dir / f"neonize-{port}"
        if port == in_use or not (_lock_path(cache_dir, port).exists() or _age(copy) > UNLEASED_MAX_AGE):
            continue
        fd = _lock(cache_dir, port)
        if fd is None:
            continue  # another run holds it
        try:
            if idle < keep and (copy / _MARKER).exists():
                idle += 1
                continue
            shutil.rmtree(copy, ignore_errors=True)
            _lock_path(cache_dir, port).unlink(missing_ok=True)
        finally:
            os.close(fd)
    for staging in cache_dir.glob(".neonize-*"):
        if _age(staging) > STAGING_MAX_AGE:
            shutil.rmtree(staging, ignore_errors=True)


def _age(path: Path) -> float:
    """Seconds since ``path`` (or its marker, for a copy) last changed; 0 if it is gone."""
    for candidate in (path / _MARKER, path):
        with contextlib.suppress(OSError):
            return time.time() - candidate.stat().st_mtime
    return 0.0
