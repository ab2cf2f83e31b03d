"""Schema migrations on the real server: applied once, in order, safely from several nodes at once."""

from __future__ import annotations

import psycopg
import pytest

from tests.cluster.racing import run_together
from waservice.cluster.migrations import MIGRATIONS, Migration, SchemaTooNew, latest_version, migrate

pytestmark = pytest.mark.cluster

EXTRA = Migration(latest_version() + 1, "ALTER TABLE ws_sessions ADD COLUMN note text")


def _versions(conn: psycopg.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT version FROM ws_schema_version ORDER BY version")]


def test_a_fresh_database_gets_every_step_and_a_second_run_changes_nothing(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        assert migrate(conn) == latest_version()
        assert _versions(conn) == [m.version for m in MIGRATIONS]
        conn.execute("INSERT INTO ws_sessions (id) VALUES ('s1')")
        assert migrate(conn) == latest_version()
        assert _versions(conn) == [m.version for m in MIGRATIONS]
        assert conn.execute("SELECT id, owner, epoch FROM ws_sessions").fetchall() == [("s1", None, 0)]


def test_a_later_step_is_applied_on_top_of_an_existing_schema(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        migrate(conn)
        conn.execute("INSERT INTO ws_sessions (id) VALUES ('kept')")
        assert migrate(conn, [*MIGRATIONS, EXTRA]) == EXTRA.version
        assert conn.execute("SELECT id, note FROM ws_sessions").fetchall() == [("kept", None)]


def test_an_older_waservice_refuses_a_newer_schema(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        migrate(conn, [*MIGRATIONS, EXTRA])
        with pytest.raises(SchemaTooNew, match=f"version {EXTRA.version}"):
            migrate(conn)


def test_a_failing_step_leaves_the_previous_version_intact(database_url: str) -> None:
    broken = Migration(latest_version() + 1, "ALTER TABLE no_such_table ADD COLUMN x int")
    with psycopg.connect(database_url) as conn:
        migrate(conn)
        conn.commit()
        with pytest.raises(psycopg.errors.UndefinedTable):
            migrate(conn, [*MIGRATIONS, broken])
        conn.rollback()
        assert _versions(conn) == [m.version for m in MIGRATIONS]


def test_three_nodes_starting_at_once_apply_each_step_exactly_once(database_url: str) -> None:
    steps = [*MIGRATIONS, EXTRA, Migration(EXTRA.version + 1, "CREATE TABLE ws_counter (n int)")]
    for _round in range(5):
        with psycopg.connect(database_url, autocommit=True) as conn:
            # Everything every step made (tables, functions, triggers), whatever the steps are.
            conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")

        def node() -> int:
            with psycopg.connect(database_url) as conn:
                return migrate(conn, steps)

        results = run_together([node] * 3)
        assert results == [steps[-1].version] * 3
        with psycopg.connect(database_url) as conn:
            assert _versions(conn) == [m.version for m in steps]
            columns = conn.execute(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'ws_sessions'"
            ).fetchone()[0]
            assert columns == 10  # v1 and v2
