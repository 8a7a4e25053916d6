"""Storage behind one small async interface: API keys and usage rows, on SQLite (the embedded
default) or PostgreSQL (clusters), one set of SQLAlchemy Core tables and one Alembic history.

Nothing here blocks the event loop: SQLite runs in a worker thread, PostgreSQL on asyncpg
(see :mod:`.db`). Usage rows arrive in batches from :mod:`.writer`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, func, select, text

from .db import Database, StoreError, describe_error, open_database
from .keys import KEY_PREFIX, KeyRecord, KeyStore, hash_key, key_json
from .migrate import REVISIONS, SCHEMA_HEAD, SchemaError, current, migrate
from .reports import DAY, Report, ReportQuery
from .tables import usage, usage_daily
from .usage import UsageRow, unique

__all__ = [
    "KEY_PREFIX",
    "REVISIONS",
    "SCHEMA_HEAD",
    "KeyRecord",
    "Report",
    "ReportQuery",
    "SchemaError",
    "Store",
    "StoreError",
    "UsageRow",
    "describe_error",
    "hash_key",
    "key_json",
]


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.db: Database = open_database(url)
        self.dialect = self.db.dialect
        self.keys = KeyStore(self.db)

    async def schema_version(self) -> str | None:
        return await self.db.run(current)

    async def migrate(self, auto: bool = True) -> str | None:
        """Upgrade the schema to the newest revision, or (``auto=False``) raise
        :class:`SchemaError` naming `chatgate db upgrade` when it is not there."""
        return await migrate(self.db, auto)

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> bool:
        await self.db.run(_ping)
        return True

    # --- usage -----------------------------------------------------------------------

    async def insert_usage(self, rows: Sequence[UsageRow]) -> int:
        """Insert a batch exactly once (rows whose request id is already there are skipped,
        in the rows and in the daily rollup); return how many rows were new."""
        return await self.db.insert_usage(unique(rows))

    async def count_usage(self) -> int:
        return await self.db.run(_count)

    async def spent_since(self, key_id: str, start: float) -> int:
        """Micro-USD the key's usage rows cost since ``start`` (the budget's source of
        truth). Budget periods start at UTC midnight, so the rollup answers."""
        return await self.db.run(_spent_since, key_id, start)

    async def report(self, query: ReportQuery) -> Report:
        return await self.db.run(query.run)


def _ping(conn: Connection) -> None:
    conn.execute(text("SELECT 1"))


def _count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(usage)).scalar_one())


def _spent_since(conn: Connection, key_id: str, start: float) -> int:
    if start % DAY == 0:
        d = usage_daily.c
        q = select(func.coalesce(func.sum(d.cost_micros), 0)).where(
            d.key_id == key_id, d.day >= int(start)
        )
    else:
        c = usage.c
        q = select(func.coalesce(func.sum(c.cost_micros), 0)).where(
            c.key_id == key_id, c.created >= start
        )
    return int(conn.execute(q).scalar_one())
