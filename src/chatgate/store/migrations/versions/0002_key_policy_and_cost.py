"""Key policies (limits, budget, expiry, owner) and the cost of each usage row.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as t:
        t.add_column(sa.Column("owner", sa.String(200), nullable=True))
        t.add_column(sa.Column("rpm", sa.Integer, nullable=True))
        t.add_column(sa.Column("tpm", sa.Integer, nullable=True))
        t.add_column(sa.Column("max_concurrency", sa.Integer, nullable=True))
        t.add_column(sa.Column("budget_micros", sa.BigInteger, nullable=True))
        t.add_column(
            sa.Column("budget_period", sa.String(16), nullable=False, server_default="total")
        )
        t.add_column(sa.Column("expires", sa.Float, nullable=True))
        t.add_column(sa.Column("enabled", sa.Boolean, nullable=False, server_default="1"))
        t.add_column(sa.Column("metadata", sa.JSON, nullable=True))
    with op.batch_alter_table("usage") as t:
        t.add_column(sa.Column("owner", sa.String(200), nullable=True))
        t.add_column(sa.Column("cost_micros", sa.BigInteger, nullable=True))
    op.create_index("ix_usage_owner_created", "usage", ["owner", "created"])


def downgrade() -> None:
    op.drop_index("ix_usage_owner_created", "usage")
    with op.batch_alter_table("usage") as t:
        t.drop_column("cost_micros")
        t.drop_column("owner")
    with op.batch_alter_table("api_keys") as t:
        for name in ("metadata", "enabled", "expires", "budget_period", "budget_micros",
                     "max_concurrency", "tpm", "rpm", "owner"):  # fmt: skip
            t.drop_column(name)
