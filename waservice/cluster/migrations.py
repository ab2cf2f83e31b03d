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
    Migration(
        3,
        """
        -- Per-session API keys (cluster/keys.py): only the SHA-256 of a key is stored.
        CREATE TABLE ws_session_keys (
            key_id      text PRIMARY KEY,
            session_id  text NOT NULL REFERENCES ws_sessions (id) ON DELETE CASCADE,
            digest      bytea NOT NULL,
            created_at  double precision NOT NULL
        );
        CREATE INDEX ws_session_keys_by_session ON ws_session_keys (session_id);
        -- Every node caches the keys: any change, cascades from a deleted session included, tells
        -- them to reload, in the transaction that made it.
        CREATE FUNCTION ws_session_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('ws_session_keys', '');
            RETURN NULL;
        END $$;
        CREATE TRIGGER ws_session_keys_changed
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ws_session_keys
            FOR EACH STATEMENT EXECUTE FUNCTION ws_session_keys_changed();

        -- Answers remembered by Idempotency-Key (cluster/idempotency.py), seen by every node.
        CREATE TABLE ws_idempotency_keys (
            scope       text NOT NULL,  -- who asked: 'admin' or 'key:<session key id>'
            session     text NOT NULL,  -- the session(s) the request named, comma-separated
            key         text NOT NULL,  -- the Idempotency-Key header
            fingerprint bytea NOT NULL,  -- SHA-256 of method, path, session and body
            status      integer NOT NULL,
            body        bytea NOT NULL,  -- the JSON answered
            created_at  double precision NOT NULL,
            PRIMARY KEY (scope, session, key)
        );
        CREATE INDEX ws_idempotency_keys_by_age ON ws_idempotency_keys (created_at);
        """,
    ),
    Migration(
        4,
        """
        -- The event log of the whole cluster (cluster/eventlog.py): one id sequence for every node.
        CREATE TABLE ws_events (
            id          bigint PRIMARY KEY,  -- given out under ws_event_head's row lock, in commit order
            session_id  text NOT NULL,
            type        text NOT NULL,
            timestamp   text NOT NULL,
            data        bytea NOT NULL,  -- the JSON exactly as encoded: webhooks pass it through
            dedup_key   text,
            received    double precision NOT NULL,
            logged_at   double precision NOT NULL
        );
        CREATE UNIQUE INDEX ws_events_once
            ON ws_events (session_id, type, dedup_key) WHERE dedup_key IS NOT NULL;
        CREATE INDEX ws_events_by_session ON ws_events (session_id, id);
        CREATE INDEX ws_events_by_age ON ws_events (logged_at);
        -- The last id given out: appends lock this row, so ids become visible in increasing order
        -- (a follower reading id > cursor never skips one), and it outlives pruning.
        CREATE TABLE ws_event_head (
            one     boolean PRIMARY KEY DEFAULT true CHECK (one),
            last_id bigint NOT NULL
        );
        INSERT INTO ws_event_head (last_id) VALUES (0);

        -- Webhooks and their deliveries (cluster/webhooks.py), as store/webhooks.py keeps them.
        CREATE TABLE ws_webhooks (
            id          text PRIMARY KEY,
            url         text NOT NULL,
            events      text[] NOT NULL,  -- types, or {*}
            session_id  text,  -- NULL: every session
            secret      text NOT NULL,
            created_at  double precision NOT NULL,
            source      text NOT NULL CHECK (source IN ('api', 'config')),
            enabled     boolean NOT NULL DEFAULT true
        );
        CREATE TABLE ws_deliveries (
            webhook_id       text NOT NULL,
            event_id         bigint NOT NULL,
            session_id       text NOT NULL,
            status           text NOT NULL CHECK (status IN ('pending', 'failed', 'ok', 'dead')),
            attempts         integer NOT NULL DEFAULT 0,
            first_attempt_at double precision,
            next_attempt_at  double precision NOT NULL,
            last_status_code integer,
            last_error       text,
            updated_at       double precision NOT NULL,
            PRIMARY KEY (webhook_id, event_id)
        );
        CREATE INDEX ws_deliveries_open
            ON ws_deliveries (webhook_id, session_id, event_id) WHERE status IN ('pending', 'failed');
        CREATE INDEX ws_deliveries_by_status ON ws_deliveries (webhook_id, status, event_id);
        CREATE INDEX ws_deliveries_by_event ON ws_deliveries (event_id);
        -- Which node delivers a lane (webhook, session) until when (cluster/lanes.py).
        CREATE TABLE ws_webhook_lanes (
            webhook_id  text NOT NULL,
            session_id  text NOT NULL,
            node        text NOT NULL,
            until       timestamptz NOT NULL,
            PRIMARY KEY (webhook_id, session_id)
        );

        -- The message index (cluster/messages.py), as store/messages.py keeps it.
        CREATE TABLE ws_messages (
            session_id  text NOT NULL,
            message_id  text NOT NULL,
            chat        text,
            chat_jid    text NOT NULL,
            sender_jid  text NOT NULL,
            from_me     boolean NOT NULL,
            kind        text NOT NULL,
            text        text,
            attachment  bytea,  -- private: the media keys
            mimetype    text,
            indexed_at  double precision NOT NULL,
            PRIMARY KEY (session_id, message_id)
        );
        CREATE INDEX ws_messages_by_age ON ws_messages (indexed_at);
        """,
    ),
    Migration(
        5,
        """
        -- Which node lets the first start through to create whatsmeow's tables (cluster/devices.py):
        -- two of whatsmeow's schema upgrades at once collide. One row; a claim lasts until `until`.
        -- A session's state until its owner writes one: what the API calls a session not running.
        ALTER TABLE ws_sessions ALTER COLUMN state SET DEFAULT 'disconnected';
        UPDATE ws_sessions SET state = 'disconnected' WHERE state = 'stopped';
        CREATE TABLE ws_device_store_upgrade (
            id    int PRIMARY KEY CHECK (id = 1),
            node  text NOT NULL,
            until timestamptz NOT NULL
        );
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
