"""budgets: each tenant's daily and monthly budget, and an index to sum its claimed jobs

Revision ID: 0012_tenant_budgets
Revises: 0011_callback_sent_at
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_tenant_budgets"
down_revision = "0011_callback_sent_at"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_budgets",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("daily_micros", sa.BigInteger(), nullable=True),
        sa.Column("monthly_micros", sa.BigInteger(), nullable=True),
        sa.Column("soft_fraction", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    # a plain CREATE INDEX on both dialects: no batch rebuild of `jobs` on SQLite
    op.create_index("ix_jobs_tenant_claimed_at", "jobs", ["tenant", "claimed_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_claimed_at", table_name="jobs")
    op.drop_table("tenant_budgets")
