"""Storage behind one small interface: API keys and usage rows (SQLite or PostgreSQL).

Blocking SQLAlchemy Core calls; the server runs them in a worker thread, off the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from msgspec import Struct
from sqlalchemy import Engine, create_engine, event, func, select, text

from .keys import KEY_PREFIX, KeyRecord, KeyStore, hash_key, key_json
from .reports import Report, ReportQuery
from .tables import usage

__all__ = [
    "KEY_PREFIX",
    "KeyRecord",
    "Report",
    "ReportQuery",
    "Store",
    "UsageRow",
    "hash_key",
    "key_json",
]


class UsageRow(Struct):
    request_id: str
    created: float
    key_id: str | None
    model: str | None
    provider: str | None
    upstream_model: str | None
    stream: bool
    status: int
    error_type: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    latency_ms: float
    ttft_ms: float | None
    upstream_request_id: str | None
    owner: str | None = None
    cost_micros: int | None = None


_USAGE_FIELDS = UsageRow.__struct_fields__
SCHEMA_HEAD = "0002"  # the newest migration (a test keeps it equal to Alembic's head)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.keys = KeyStore(self.engine)
        style = "?" if url.startswith("sqlite") else "%s"
        self._insert_sql = (
            f"INSERT INTO usage ({', '.join(_USAGE_FIELDS)}) "
            f"VALUES ({', '.join([style] * len(_USAGE_FIELDS))})"
        )

    def schema_version(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        except Exception:  # no table yet: a new database
            return None
        return str(row[0]) if row else None

    def migrate(self) -> None:
        """Bring the schema to the newest revision (Alembic). Alembic is only imported when
        there is something to do: it would otherwise stay in memory for nothing (~11 MB)."""
        if self.schema_version() == SCHEMA_HEAD:
            return
        import logging

        from alembic import command
        from alembic.config import Config

        logging.getLogger("alembic").setLevel(logging.WARNING)  # one line of ours instead

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        logging.getLogger("chatgate.store").info("database schema upgraded to %s", SCHEMA_HEAD)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    # --- usage -----------------------------------------------------------------------

    def insert_usage(self, rows: Iterable[UsageRow]) -> int:
        """One multi-row insert per batch, straight through the DB driver: at thousands of
        rows a second the ORM-free Core path still cost a tenth of a core."""
        values = [tuple(getattr(r, f) for f in _USAGE_FIELDS) for r in rows]
        if not values:
            return 0
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.executemany(self._insert_sql, values)
            cur.close()
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()
        return len(values)

    def count_usage(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(usage)).scalar_one())

    def spent_since(self, key_id: str, start: float) -> int:
        """Micro-USD the key's usage rows cost since ``start`` (the budget's source of truth)."""
        q = select(func.coalesce(func.sum(usage.c.cost_micros), 0)).where(
            usage.c.key_id == key_id, usage.c.created >= start
        )
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def report(self, query: ReportQuery) -> Report:
        return query.run(self.engine)


def default_db_url() -> str:
    return os.environ.get("CHATGATE_DATABASE_URL", "sqlite:///./chatgate.db")
