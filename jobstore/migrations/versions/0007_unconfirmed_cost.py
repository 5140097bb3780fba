"""results: a webhook's reported cost that did not fit its job's estimate, kept apart

Revision ID: 0007_unconfirmed_cost
Revises: 0006_runware_capacity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_unconfirmed_cost"
down_revision = "0006_runware_capacity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("results", sa.Column("unconfirmed_cost_micros", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("results", "unconfirmed_cost_micros")
