"""Make a copy of the installed neonize whose Go library talks to the simulator.

whatsmeow dials one fixed URL and trusts one fixed root key, both compiled into neonize's shared
library with no setting to change them. A Go string's length is stored apart from its bytes, so a
same-length replacement of each constant in a *copy* of the library is enough. The installed package
is never touched; the caller prepends the returned directory to ``PYTHONPATH`` of the process that
imports neonize (never the pytest process itself).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from .noise import TEST_ROOT, WHATSAPP_ROOT_PUB

WHATSAPP_URL = b"wss://web.whatsapp.com/ws/chat"
_MARKER = "wasim-patch.json"


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


def patched_neonize(cache_dir: Path, port: int, root_pub: bytes = TEST_ROOT.pub) -> Path:
    """Return a directory to prepend to ``PYTHONPATH`` so ``import neonize`` loads a patched copy.

    The copy lives in ``cache_dir/neonize-<port>/neonize/`` and is reused while its marker records
    the same port, root key and source library (size and mtime); otherwise it is rebuilt.
    """
    source = installed_neonize_dir()
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
        (staging / _MARKER).write_text(json.dumps(wanted))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
