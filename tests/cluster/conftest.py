"""A throwaway PostgreSQL server for the cluster tests: one per test session, a fresh database per test.

The server is Debian's (``initdb`` + ``pg_ctl``), started in a temporary directory on a free loopback
port with fsync off, as facts-scale.md section 4 measured; as root it runs as the ``postgres`` user
(``initdb`` refuses root). It is stopped at the end of the session.

Without ``initdb`` every test here is skipped with the reason, unless WASERVICE_REQUIRE_POSTGRES=1
(`.ci/run` sets it) turns the skip into a failure.

Environment knobs:
  WASERVICE_PG_BIN   directory holding initdb and pg_ctl (default: PATH, then /usr/lib/postgresql/*/bin)
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

REQUIRE = os.environ.get("WASERVICE_REQUIRE_POSTGRES", "") not in ("", "0", "false", "no")
_database_numbers = itertools.count(1)


def _pg_bin() -> Path | None:
    pinned = os.environ.get("WASERVICE_PG_BIN")
    if pinned:
        return Path(pinned) if (Path(pinned) / "initdb").exists() else None
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(versions[0]).parent if versions else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _pg_bin() is not None or REQUIRE:
        return
    skip = pytest.mark.skip(
        reason="cluster tests need PostgreSQL's initdb and pg_ctl (apt-get install postgresql, or set "
        "WASERVICE_PG_BIN; .ci/run installs it and fails instead of skipping)"
    )
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    socket_dir: Path

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb refuses to run as root; the postgres user owns the cluster instead.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.fail("WASERVICE_REQUIRE_POSTGRES=1 but initdb/pg_ctl were not found")
    # A short path: the Unix socket's path must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="wspg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
    data = root / "data"
    port = _free_port()
    subprocess.run(
        _as_postgres(
            [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log")]
    started = subprocess.run(
        _as_postgres([*pg_ctl, "-o", options, "-w", "start"]), capture_output=True, text=True
    )
    if started.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{log}")
    try:
        yield PostgresServer(host="127.0.0.1", port=port, socket_dir=root)
    finally:
        subprocess.run(_as_postgres([*pg_ctl, "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"t{os.getpid()}_{next(_database_numbers)}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url(name)
    finally:
        with (
            psycopg.connect(postgres_server.url(), autocommit=True) as admin,
            contextlib.suppress(psycopg.Error),
        ):
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
