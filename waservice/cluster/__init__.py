"""Several nodes on one PostgreSQL (issue 10): the driver, the schema and the lease SQL.

Nothing here is imported unless `database.url` names a PostgreSQL server; a single box on SQLite
never touches it.
"""
