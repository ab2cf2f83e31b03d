"""The fixture itself: a real server, and a database per test that no other test sees."""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.cluster


def test_each_test_gets_an_empty_database_on_a_real_server(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        assert int(version) >= 130000
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()[0]
        assert tables == 0
        conn.execute("CREATE TABLE mark (x int)")
