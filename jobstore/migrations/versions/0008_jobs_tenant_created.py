"""jobs: an index on (tenant, created_at, id), for listing a tenant's jobs newest first

Revision ID: 0008_jobs_tenant_created
Revises: 0007_unconfirmed_cost
"""

from __future__ import annotations

from alembic import op

revision = "0008_jobs_tenant_created"
down_revision = "0007_unconfirmed_cost"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_tenant_created_at_id", ["tenant", "created_at", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_tenant_created_at_id")
