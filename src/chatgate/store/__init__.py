"""Storage behind one small interface: API keys and usage rows (SQLite or PostgreSQL).

Blocking SQLAlchemy Core calls; the server runs them in a worker thread, off the event loop.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from msgspec import Struct
from sqlalchemy import Engine, case, create_engine, event, func, insert, select, text, update

from .tables import api_keys, metadata, usage

KEY_PREFIX = "sk-cg-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRecord(Struct, frozen=True):
    id: str
    name: str
    models: tuple[str, ...] | None  # None = every model
    created: float
    revoked: float | None = None
    prefix: str = ""

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


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


_USAGE_FIELDS = UsageRow.__struct_fields__


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

    def migrate(self) -> None:
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    # --- keys ------------------------------------------------------------------------

    def create_key(self, name: str, models: Sequence[str] | None) -> tuple[str, KeyRecord]:
        """Create a key; return the secret (shown once, never stored) and its record."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        rec = KeyRecord(
            id="key_" + secrets.token_hex(8),
            name=name,
            models=tuple(models) if models is not None else None,
            created=time.time(),
            prefix=key[:10],
        )
        with self.engine.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    id=rec.id,
                    name=rec.name,
                    key_hash=hash_key(key),
                    key_prefix=rec.prefix,
                    models=list(rec.models) if rec.models is not None else None,
                    created=rec.created,
                    revoked=None,
                )
            )
        return key, rec

    def find_key(self, key_hash: str) -> KeyRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash)).first()
        return _key_record(row._mapping) if row is not None else None

    def get_key(self, key_id: str) -> KeyRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return _key_record(row._mapping) if row is not None else None

    def list_keys(self, include_revoked: bool = False) -> list[KeyRecord]:
        q = select(api_keys).order_by(api_keys.c.created)
        if not include_revoked:
            q = q.where(api_keys.c.revoked.is_(None))
        with self.engine.connect() as conn:
            return [_key_record(r._mapping) for r in conn.execute(q)]

    def revoke_key(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked.is_(None))
                .values(revoked=time.time())
            )
        return bool(res.rowcount)

    # --- usage -----------------------------------------------------------------------

    def insert_usage(self, rows: Iterable[UsageRow]) -> int:
        values = [{f: getattr(r, f) for f in _USAGE_FIELDS} for r in rows]
        if not values:
            return 0
        with self.engine.begin() as conn:
            conn.execute(insert(usage), values)
        return len(values)

    def count_usage(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(usage)).scalar_one())

    def usage_summary(self, since: float | None = None) -> list[dict[str, Any]]:
        c = usage.c
        q = select(
            c.model,
            func.count().label("requests"),
            func.sum(case((c.status >= 400, 1), else_=0)).label("errors"),
            func.coalesce(func.sum(c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(c.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(c.total_tokens), 0).label("total_tokens"),
            func.avg(c.latency_ms).label("avg_latency_ms"),
            func.avg(c.ttft_ms).label("avg_ttft_ms"),
        ).group_by(c.model)
        if since is not None:
            q = q.where(c.created >= since)
        q = q.order_by(func.count().desc(), c.model)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def recent_usage(self, limit: int = 50) -> list[dict[str, Any]]:
        q = select(usage).order_by(usage.c.created.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]


def _key_record(m: Any) -> KeyRecord:
    models = m["models"]
    return KeyRecord(
        id=m["id"],
        name=m["name"],
        models=tuple(models) if models is not None else None,
        created=m["created"],
        revoked=m["revoked"],
        prefix=m["key_prefix"],
    )


def default_db_url() -> str:
    return os.environ.get("CHATGATE_DATABASE_URL", "sqlite:///./chatgate.db")
