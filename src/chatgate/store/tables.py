"""SQLAlchemy Core tables: the same definitions serve SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),  # SHA-256 hex; never the key
    Column("key_prefix", String(16), nullable=False),  # "sk-cg-ab12": enough to recognise it
    Column("models", JSON, nullable=True),  # names or glob patterns; null = every model
    Column("created", Float, nullable=False),
    Column("revoked", Float, nullable=True),
    # policy (issue 5): null = unlimited
    Column("owner", String(200), nullable=True),  # team or user, for reporting
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("max_concurrency", Integer, nullable=True),
    Column("budget_micros", BigInteger, nullable=True),  # USD * 1e6
    Column("budget_period", String(16), nullable=False, server_default="total"),
    Column("expires", Float, nullable=True),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("metadata", JSON, nullable=True),
)

usage = Table(
    "usage",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("created", Float, nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("model", String(200), nullable=True),  # the name the client asked for
    Column("provider", String(100), nullable=True),
    Column("upstream_model", String(200), nullable=True),
    Column("stream", Boolean, nullable=False, default=False),
    Column("status", Integer, nullable=False),
    Column("error_type", String(100), nullable=True),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=True),
    Column("total_tokens", Integer, nullable=True),
    Column("cached_tokens", Integer, nullable=True),
    Column("reasoning_tokens", Integer, nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("ttft_ms", Float, nullable=True),
    Column("upstream_request_id", String(200), nullable=True),
    Column("owner", String(200), nullable=True),
    Column("cost_micros", BigInteger, nullable=True),  # USD * 1e6; null = no price known
)

Index("ix_usage_created", usage.c.created)
Index("ix_usage_key_created", usage.c.key_id, usage.c.created)
Index("ix_usage_owner_created", usage.c.owner, usage.c.created)

# One row per UTC day and (key, owner, model, provider, status), kept in step with `usage` in
# the same transaction as each batch's insert (only rows actually inserted count, so a replay
# cannot count twice). Month-long reports read a few thousand of these instead of millions of
# usage rows. The dimensions are '' instead of NULL: NULLs never conflict in a unique index,
# and the upsert needs them to.
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", BigInteger, primary_key=True, autoincrement=False),  # epoch s, UTC midnight
    Column("key_id", String(32), primary_key=True),
    Column("owner", String(200), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("provider", String(100), primary_key=True),
    Column("status", Integer, primary_key=True, autoincrement=False),
    Column("requests", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("total_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("latency_ms_sum", Float, nullable=False),
    Column("ttft_ms_sum", Float, nullable=False),
    Column("ttft_count", BigInteger, nullable=False),  # rows with a ttft (streams)
)

Index("ix_usage_daily_key_day", usage_daily.c.key_id, usage_daily.c.day)
DAILY_DIMS = ("day", "key_id", "owner", "model", "provider", "status")
DAILY_SUMS = tuple(c.name for c in usage_daily.columns if c.name not in DAILY_DIMS)
