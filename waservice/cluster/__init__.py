"""Several nodes on one PostgreSQL (issue 10): the driver, the schema, the lease SQL, LISTEN/NOTIFY,
and the state every node must share (session API keys, Idempotency-Key answers).

Nothing here is imported unless `database.url` names a PostgreSQL server; a single box on SQLite
never touches it.
"""
