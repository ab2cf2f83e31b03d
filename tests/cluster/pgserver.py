"""A throwaway PostgreSQL server: Debian's ``initdb`` + ``pg_ctl`` in a temporary directory, on a free
loopback port, fsync off (facts-scale.md section 4). As root it runs as the ``postgres`` user (``initdb``
refuses root). Used by the cluster tests' fixture and by bench/cluster.py.

``WASERVICE_PG_BIN`` names the directory holding initdb and pg_ctl (default: PATH, then
/usr/lib/postgresql/*/bin).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """initdb/pg_ctl are missing, or the server did not start (the message says why)."""


def pg_bin() -> Path | None:
    pinned = os.environ.get("WASERVICE_PG_BIN")
    if pinned:
        return Path(pinned) if (Path(pinned) / "initdb").exists() else None
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(versions[0]).parent if versions else None


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


@contextlib.contextmanager
def postgres_server(max_connections: int = 500) -> Iterator[PostgresServer]:
    """Start a server, yield it, stop it and delete its files. `max_connections`: whatsmeow opens
    about 2 connections per session (facts-scale.md section 2), beyond the server's default 100."""
    bin_dir = pg_bin()
    if bin_dir is None:
        raise PostgresUnavailable("initdb/pg_ctl were not found (apt-get install postgresql)")
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
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections={max_connections}"
    )
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log")]
    started = subprocess.run(
        _as_postgres([*pg_ctl, "-o", options, "-w", "start"]), capture_output=True, text=True
    )
    if started.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"PostgreSQL did not start: {started.stderr}\n{log}")
    try:
        yield PostgresServer(host="127.0.0.1", port=port, socket_dir=root)
    finally:
        subprocess.run(_as_postgres([*pg_ctl, "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
