"""The stores: SQLite and PostgreSQL, each holding group state, rate-limit slots and decisions,
and opening one from a database URL."""
