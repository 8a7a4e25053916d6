"""Daily usage rollup (reports over months read it instead of every usage row), backfilled.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_SUMS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_micros",
)


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.BigInteger, primary_key=True, autoincrement=False),
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
    )
    op.create_index("ix_usage_daily_key_day", "usage_daily", ["key_id", "day"])
    # backfill from the rows already there (one INSERT ... SELECT, in the migration's
    # transaction: a replica starting meanwhile waits on the migration lock)
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
    select = sa.select(
        *dims,
        sa.func.count(),
        sa.func.sum(sa.case((c.status >= sa.literal_column("400"), 1), else_=0)),
        *[sa.func.coalesce(sa.func.sum(getattr(c, n)), 0) for n in _SUMS],
        sa.func.coalesce(sa.func.sum(c.latency_ms), 0.0),
        sa.func.coalesce(sa.func.sum(c.ttft_ms), 0.0),
        sa.func.count(c.ttft_ms),
    ).group_by(*dims)
    daily = sa.table(
        "usage_daily",
        *[
            sa.column(n)
            for n in (
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
            )
        ],
    )
    op.execute(daily.insert().from_select(list(daily.c.keys()), select))


def downgrade() -> None:
    op.drop_index("ix_usage_daily_key_day", "usage_daily")
    op.drop_table("usage_daily")
