"""Hourly usage rollup: the dashboard's 24 hours (hour buckets with p50/p95 from the latency
histogram, the Models page's usage) without reading the usage rows, backfilled.

The same columns as ``usage_daily`` (0003, 0004), keyed by the hour's start; the bounds of
the histogram are frozen here, as the writer had them at this revision. The backfill is one
INSERT ... SELECT in the migration's transaction (a replica starting meanwhile waits on the
migration lock).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BOUNDS = (10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000,
          5000, 7500, 10000, 15000, 20000, 30000, 60000, 120000, 300000)  # fmt: skip
HISTOGRAM = (*(f"lat_lt_{b}" for b in BOUNDS), f"lat_ge_{BOUNDS[-1]}")
_SUMS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_micros",
)
_DIMS = ("key_id", "owner", "model", "provider", "status")
HOUR = 3600


def upgrade() -> None:
    op.create_table(
        "usage_hourly",
        sa.Column("hour", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("provider", sa.String(100), primary_key=True),
        sa.Column("status", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        *[sa.Column(name, sa.BigInteger, nullable=False) for name in _SUMS],
        sa.Column("latency_ms_sum", sa.Float, nullable=False),
        sa.Column("ttft_ms_sum", sa.Float, nullable=False),
        sa.Column("ttft_count", sa.BigInteger, nullable=False),
        *[sa.Column(n, sa.BigInteger, nullable=False, server_default="0") for n in HISTOGRAM],
    )
    _backfill()


def _backfill() -> None:
    u = sa.table(
        "usage",
        *[sa.column(n) for n in ("created", *_DIMS)],
        *[sa.column(n) for n in (*_SUMS, "latency_ms", "ttft_ms")],
    )
    c = u.c
    # literals, not bound parameters: PostgreSQL must see the GROUP BY expressions as the
    # selected ones
    width: Any = sa.literal_column(str(HOUR))
    empty: Any = sa.literal_column("''")
    hour = sa.cast(sa.func.floor(c.created / width) * width, sa.BigInteger)
    dims = [hour, *(sa.func.coalesce(getattr(c, n), empty) for n in _DIMS[:-1]), c.status]
    one: Any = sa.literal_column("1")
    zero: Any = sa.literal_column("0")
    bins = []
    low: Any = None
    for bound in (*BOUNDS, None):
        cond = []
        if low is not None:
            cond.append(c.latency_ms >= sa.literal_column(str(low)))
        if bound is not None:
            cond.append(c.latency_ms < sa.literal_column(str(bound)))
        bins.append(sa.func.sum(sa.case((sa.and_(*cond), one), else_=zero)))
        low = bound
    select = sa.select(
        *dims,
        sa.func.count(),
        sa.func.sum(sa.case((c.status >= sa.literal_column("400"), one), else_=zero)),
        *[sa.func.coalesce(sa.func.sum(getattr(c, n)), 0) for n in _SUMS],
        sa.func.coalesce(sa.func.sum(c.latency_ms), 0.0),
        sa.func.coalesce(sa.func.sum(c.ttft_ms), 0.0),
        sa.func.count(c.ttft_ms),
        *bins,
    ).group_by(*dims)
    names = (
        "hour",
        *_DIMS,
        "requests",
        "errors",
        *_SUMS,
        "latency_ms_sum",
        "ttft_ms_sum",
        "ttft_count",
        *HISTOGRAM,
    )
    hourly = sa.table("usage_hourly", *[sa.column(n) for n in names])
    op.execute(hourly.insert().from_select(list(names), select))


def downgrade() -> None:
    op.drop_table("usage_hourly")
