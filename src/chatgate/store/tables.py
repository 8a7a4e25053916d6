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
# the dashboard (migration 0004): percentiles and recent errors from the index alone
Index("ix_usage_created_status_latency", usage.c.created, usage.c.status, usage.c.latency_ms)
Index("ix_usage_model_created", usage.c.model, usage.c.created)

# Latency histogram of the rollups (migrations 0004, 0005): the count of requests per latency
# range, so the dashboard's buckets have p50/p95 without reading the usage rows. Bucket i
# holds latencies below LATENCY_BOUNDS_MS[i] (and at or above the bound before it); the last
# one holds the rest. Ratios of 1.5-2 between bounds in the usual range (100 ms - 30 s).
LATENCY_BOUNDS_MS = (10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000,
                     5000, 7500, 10000, 15000, 20000, 30000, 60000, 120000, 300000)  # fmt: skip
LATENCY_COLUMNS = (
    *(f"lat_lt_{b}" for b in LATENCY_BOUNDS_MS),
    f"lat_ge_{LATENCY_BOUNDS_MS[-1]}",
)

# The rollups: one row per period (UTC day, or hour) and (key, owner, model, provider,
# status), kept in step with `usage` in the same transaction as each batch's insert (only
# rows actually inserted count, so a replay cannot count twice). Month-long reports and the
# dashboard read a few thousand of these instead of millions of usage rows. The dimensions
# are '' instead of NULL: NULLs never conflict in a unique index, and the upsert needs them to.


def _rollup(name: str, period: str) -> Table:
    """A rollup table keyed by ``period`` (epoch seconds of the period's start, UTC)."""
    return Table(
        name,
        metadata,
        Column(period, BigInteger, primary_key=True, autoincrement=False),
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
        *(Column(c, BigInteger, nullable=False, server_default="0") for c in LATENCY_COLUMNS),
    )


usage_daily = _rollup("usage_daily", "day")  # migrations 0003 and 0004
Index("ix_usage_daily_key_day", usage_daily.c.key_id, usage_daily.c.day)
# migration 0005: the dashboard's 24 hours (hour buckets, the Models page), whatever the traffic
usage_hourly = _rollup("usage_hourly", "hour")

ROLLUP_DIMS = ("key_id", "owner", "model", "provider", "status")  # after the period
DAILY_DIMS = ("day", *ROLLUP_DIMS)
DAILY_SUMS = tuple(c.name for c in usage_daily.columns if c.name not in DAILY_DIMS)
HOURLY_DIMS = ("hour", *ROLLUP_DIMS)
assert tuple(c.name for c in usage_hourly.columns if c.name not in HOURLY_DIMS) == DAILY_SUMS
