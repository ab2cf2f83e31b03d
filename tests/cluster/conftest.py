"""A throwaway PostgreSQL server for the cluster tests (pgserver.py): one per test session, a fresh
database per test. It is stopped at the end of the session.

Without ``initdb`` every test here is skipped with the reason, unless WASERVICE_REQUIRE_POSTGRES=1
(`.ci/run` sets it) turns the skip into a failure.

Environment knobs:
  WASERVICE_PG_BIN   directory holding initdb and pg_ctl (default: PATH, then /usr/lib/postgresql/*/bin)
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.cluster.nodes import Cluster
from tests.cluster.pgserver import PostgresServer, PostgresUnavailable, pg_bin
from tests.cluster.pgserver import postgres_server as start_postgres
from tests.cluster.receiver import receiver  # noqa: F401 (fixtures for every test here)
from tests.simulator.conftest import sim  # noqa: F401
from waservice.cluster.migrations import migrate

REQUIRE = os.environ.get("WASERVICE_REQUIRE_POSTGRES", "") not in ("", "0", "false", "no")
_database_numbers = itertools.count(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if pg_bin() is not None or REQUIRE:
        return
    skip = pytest.mark.skip(
        reason="cluster tests need PostgreSQL's initdb and pg_ctl (apt-get install postgresql, or set "
        "WASERVICE_PG_BIN; .ci/run installs it and fails instead of skipping)"
    )
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        with start_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))


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


@pytest.fixture
def url(database_url: str) -> str:
    """A fresh database with the cluster's schema (migrated as a node does at start)."""
    with psycopg.connect(database_url) as conn:
        migrate(conn)
    return database_url


@pytest.fixture
def cluster(tmp_path: Path, database_url: str) -> Iterator[Cluster]:
    """Service processes on the fake engine (`cluster.start("a")`), stopped at the end."""
    nodes = Cluster(tmp_path, database_url, ttl=3.0)
    try:
        yield nodes
    finally:
        codes = nodes.stop_all()
        assert all(code in (0, -9, None) for code in codes.values()), codes
