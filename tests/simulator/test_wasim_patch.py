"""The patched-neonize cache: one free port per test run, copies reused, the cache bounded.

A tiny fake package stands in for neonize, so these run in milliseconds.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from tests.wasim.noise import TEST_ROOT, WHATSAPP_ROOT_PUB
from tests.wasim.patch import (
    CACHE_KEEP,
    WHATSAPP_URL,
    PatchError,
    _unassigned_ports,
    lease_patched_neonize,
    simulator_url,
)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    package = tmp_path / "site" / "neonize"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "neonize-linux-amd64.so").write_bytes(b"<" + WHATSAPP_URL + b"|" + WHATSAPP_ROOT_PUB + b">")
    return package


def lease(cache: Path, source: Path, port: int | None = None):
    return lease_patched_neonize(cache, port, source=source)


def library(path: Path) -> bytes:
    return (path / "neonize" / "neonize-linux-amd64.so").read_bytes()


def copies(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.is_dir())


def test_concurrent_runs_get_distinct_free_ports_below_the_ephemeral_range(tmp_path, source) -> None:
    cache = tmp_path / "cache"
    with lease(cache, source) as a, lease(cache, source) as b:
        assert a.port != b.port
        for patched in (a, b):
            assert patched.port in _unassigned_ports()
            assert library(patched.path) == b"<" + simulator_url(patched.port) + b"|" + TEST_ROOT.pub + b">"
            with socket.socket() as sock:  # nothing else has it: the simulator can listen there
                sock.bind(("127.0.0.1", patched.port))


def test_an_idle_copy_is_reused_not_rebuilt(tmp_path, source) -> None:
    cache = tmp_path / "cache"
    with lease(cache, source) as first:
        inode = (first.path / "neonize" / "neonize-linux-amd64.so").stat().st_ino
    with lease(cache, source) as second:
        assert second == first
        assert (second.path / "neonize" / "neonize-linux-amd64.so").stat().st_ino == inode


def test_a_copy_whose_port_got_taken_is_not_reused(tmp_path, source) -> None:
    cache = tmp_path / "cache"
    with lease(cache, source) as first:
        pass
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first.port))
        squatter.listen()
        with lease(cache, source) as second:
            assert second.port != first.port


def test_a_pinned_port_is_not_shared(tmp_path, source) -> None:
    cache = tmp_path / "cache"
    with lease(cache, source) as held:
        with pytest.raises(PatchError, match="leased by another run"), lease(cache, source, held.port):
            pass
        with lease(cache, source) as other:
            assert other.port != held.port
    with lease(cache, source, held.port) as pinned:
        assert pinned == held


def test_the_cache_keeps_a_bounded_number_of_idle_copies(tmp_path, source) -> None:
    cache = tmp_path / "cache"
    # A copy made by a harness that never leased (an older checkout, maybe running now) is spared.
    unleased = cache / "neonize-45678"
    (unleased / "neonize").mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(lease(cache, source)) for _ in range(CACHE_KEEP + 3)]
    assert len(copies(cache)) == CACHE_KEEP + 3 + 1  # nothing idle was deleted while in use
    with lease(cache, source) as again:
        assert again.port == held[-1].port  # the most recently used idle copy
        assert len(copies(cache)) == CACHE_KEEP + 1 + 1
    assert unleased.exists()
    assert len(list(cache.glob("*.lock"))) == CACHE_KEEP + 1
