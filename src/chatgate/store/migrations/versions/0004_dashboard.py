"""The dashboard: a latency histogram in the daily rollup (p50/p95 of day buckets without
reading the usage rows), and indexes on the usage rows for the hour buckets and the request
log: (created, status, latency_ms) answers percentiles and recent errors from the index
alone, (model, created) the log filtered by model.

The rollup is rebuilt from the usage rows in the migration's transaction (as 0003 built it),
now with the histogram; the bounds are frozen here, as the writer had them at this revision.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
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


def upgrade() -> None:
    op.create_index("ix_usage_created_status_latency", "usage", ["created", "status", "latency_ms"])
    op.create_index("ix_usage_model_created", "usage", ["model", "created"])
    for name in HISTOGRAM:
        op.add_column(
            "usage_daily", sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
        )
    _rebuild_rollup()


def _rebuild_rollup() -> None:
    u = sa.table(
        "usage",
        *[sa.column(n) for n in ("created", "key_id", "owner", "model", "provider", "status")],
        *[sa.column(n) for n in (*_SUMS, "latency_ms", "ttft_ms")],
    )
    c = u.c
    # literals, not bound parameters: PostgreSQL must see the GROUP BY expressions as the
    # selected ones
    width: Any = sa.literal_column("86400")
    empty: Any = sa.literal_column("''")
    day = sa.cast(sa.func.floor(c.created / width) * width, sa.BigInteger)
    dims = [
        day,
        sa.func.coalesce(c.key_id, empty),
        sa.func.coalesce(c.owner, empty),
        sa.func.coalesce(c.model, empty),
        sa.func.coalesce(c.provider, empty),
        c.status,
    ]
    one: Any = sa.literal_column("1")
    bins = []
    low: Any = None
    for bound in (*BOUNDS, None):
        cond = []
        if low is not None:
            cond.append(c.latency_ms >= sa.literal_column(str(low)))
        if bound is not None:
            cond.append(c.latency_ms < sa.literal_column(str(bound)))
        bins.append(sa.func.sum(sa.case((sa.and_(*cond), one), else_=sa.literal_column("0"))))
        low = bound
    select = sa.select(
        *dims,
        sa.func.count(),
        sa.func.sum(sa.case((c.status >= sa.literal_column("400"), 1), else_=0)),
        *[sa.func.coalesce(sa.func.sum(getattr(c, n)), 0) for n in _SUMS],
        sa.func.coalesce(sa.func.sum(c.latency_ms), 0.0),
        sa.func.coalesce(sa.func.sum(c.ttft_ms), 0.0),
        sa.func.count(c.ttft_ms),
        *bins,
    ).group_by(*dims)
    names = (
        "day",
        "key_id",
        "owner",
        "model",
        "provider",
        "status",
        "requests",
        "errors",
        *_SUMS,
        "latency_ms_sum",
        "ttft_ms_sum",
        "ttft_count",
        *HISTOGRAM,
    )
    daily = sa.table("usage_daily", *[sa.column(n) for n in names])
    op.execute(daily.delete())
    op.execute(daily.insert().from_select(list(names), select))


def downgrade() -> None:
    with op.batch_alter_table("usage_daily") as t:
        for name in reversed(HISTOGRAM):
            t.drop_column(name)
    op.drop_index("ix_usage_model_created", "usage")
    op.drop_index("ix_usage_created_status_latency", "usage")
