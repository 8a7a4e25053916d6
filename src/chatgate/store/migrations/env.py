"""Alembic environment: run programmatically by Store.migrate() with a live connection."""

from __future__ import annotations

from alembic import context

from chatgate.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch ALTERs
)
with context.begin_transaction():
    context.run_migrations()
