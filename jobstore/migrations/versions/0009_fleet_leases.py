"""leases: one holder at a time of a fleet-wide duty (the reaper's pass)

Revision ID: 0009_fleet_leases
Revises: 0008_jobs_tenant_created
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobstore.schema import UTCDateTime

revision = "0009_fleet_leases"
down_revision = "0008_jobs_tenant_created"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
    )


def downgrade() -> None:
    op.drop_table("leases")
