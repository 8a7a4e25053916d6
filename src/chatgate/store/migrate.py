"""Schema versions: Alembic migrations, run on start (``auto_migrate``) or by
``chatgate db upgrade``, and the check that refuses an old schema when they are not.

Alembic is imported only when there is something to do: it would otherwise stay in memory
for nothing (~11 MB). On PostgreSQL the upgrade holds a transaction-scoped advisory lock, so
replicas starting together run it once: the others wait, then find the schema current (on
SQLite the same is done by taking the write lock first, for ``serve --workers N``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Connection, inspect, text

from .db import Database, StoreError

# every revision in order; the last is the head (a test keeps this equal to Alembic's view)
REVISIONS = ("0001", "0002", "0003", "0004", "0005")
SCHEMA_HEAD = REVISIONS[-1]
MIGRATION_LOCK = 0x63686761_7465  # pg_advisory_xact_lock key ("chgate")

log = logging.getLogger("chatgate.store")


class SchemaError(StoreError):
    """The database's schema is not the one this version of chatgate needs."""


def current(conn: Connection) -> str | None:
    """The database's revision, or None for a database without chatgate's tables."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return str(row[0]) if row else None


def script_location() -> str:
    return str(Path(__file__).with_name("migrations"))


def upgrade(conn: Connection, target: str = "head") -> tuple[str | None, str | None]:
    """Migrate to ``target`` inside the caller's transaction; return (before, after)."""
    from alembic import command
    from alembic.config import Config

    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
    elif conn.dialect.name == "sqlite" and not _sqlite_in_transaction(conn):
        # the write lock before reading the version: workers starting together wait here
        # (busy_timeout), and the DDL that follows is in this transaction
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    before = current(conn)
    if before == target or (target == "head" and before == SCHEMA_HEAD):
        return before, before
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line of ours instead
    cfg = Config()
    cfg.set_main_option("script_location", script_location())
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, target)
    return before, current(conn)


def _sqlite_in_transaction(conn: Connection) -> bool:
    return bool(getattr(conn.connection.dbapi_connection, "in_transaction", False))


def check(version: str | None) -> None:
    """Refuse a schema this version cannot run on (``auto_migrate: false``, or newer)."""
    if version == SCHEMA_HEAD:
        return
    if version is not None and version not in REVISIONS:
        raise SchemaError(
            f"the database schema is at revision {version}, newer than this chatgate knows "
            f"(its newest is {SCHEMA_HEAD}): run a newer chatgate"
        )
    have = f"at revision {version}" if version else "empty (no chatgate tables)"
    raise SchemaError(
        f"the database schema is {have}; this chatgate needs revision {SCHEMA_HEAD}. "
        "Run `chatgate db upgrade` (or set auto_migrate: true)"
    )


async def migrate(db: Database, auto: bool = True) -> str | None:
    """Bring the schema to the head (``auto``) or check that it is there; return the
    revision found before."""
    version = await db.run(current)
    if version == SCHEMA_HEAD:
        return version
    if not auto or (version is not None and version not in REVISIONS):
        check(version)
    before, after = await db.run(upgrade)
    if before != after:
        log.info("database schema upgraded from %s to %s", before or "empty", after)
    return before
