"""Versioned schema migrations, applied at start, once, however many nodes start at the same moment.

Each step is a version number and its SQL. `migrate` takes a transaction-scoped advisory lock, reads
`ws_schema_version`, applies the missing steps in order and records them, all in one transaction:
nodes starting together queue on the lock, and the ones that follow find nothing left to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg


class SchemaTooNew(Exception):
    """The database was migrated by a newer waservice than this one; running on it could corrupt it."""


@dataclass(frozen=True)
class Migration:
    version: int
    sql: str


# An arbitrary constant: the advisory lock key every node agrees on ("waservice" in ASCII, truncated).
MIGRATION_LOCK_KEY = 0x7761_7365_7276

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        """
        CREATE TABLE ws_nodes (
            node_id     text PRIMARY KEY,
            url         text NOT NULL,
            lease_until timestamptz NOT NULL,
            started_at  timestamptz NOT NULL DEFAULT now(),
            draining    boolean NOT NULL DEFAULT false
        );
        CREATE TABLE ws_sessions (
            id          text PRIMARY KEY,
            owner       text,
            epoch       bigint NOT NULL DEFAULT 0,
            autoconnect boolean NOT NULL DEFAULT true,
            jid         text,
            state       text NOT NULL DEFAULT 'stopped',
            state_at    timestamptz NOT NULL DEFAULT now(),
            created_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX ws_sessions_owner ON ws_sessions (owner);
        """,
    ),
    Migration(
        2,
        """
        -- Why a session stays down (/disconnect, replaced by another client), as on one node.
        ALTER TABLE ws_sessions ADD COLUMN down_reason text;
        """,
    ),
)


def latest_version(steps: Sequence[Migration] = MIGRATIONS) -> int:
    return steps[-1].version if steps else 0


def migrate(conn: psycopg.Connection, steps: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the schema to the last of ``steps``; returns the version the database is at afterwards.

    Runs in the caller's transaction if there is one (`Database.call` opens one), else in its own.
    """
    versions = [step.version for step in steps]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise ValueError(f"migration versions must be increasing and positive: {versions}")
    with conn.transaction():
        # Before anything else, even the CREATE TABLE IF NOT EXISTS: two of those at once can collide.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS ws_schema_version ("
            " version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = conn.execute("SELECT coalesce(max(version), 0) FROM ws_schema_version").fetchone()[0]
        if current > latest_version(steps):
            raise SchemaTooNew(
                f"the database schema is at version {current}, this waservice knows up to "
                f"{latest_version(steps)}: upgrade waservice"
            )
        for step in steps:
            if step.version > current:
                conn.execute(step.sql)
                conn.execute("INSERT INTO ws_schema_version (version) VALUES (%s)", (step.version,))
                current = step.version
        return current
