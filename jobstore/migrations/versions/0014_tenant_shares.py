"""admission: tenants' weights, each job's priority and its rank inside its tenant, the
key's backlog flag and its adaptive limit under the cap

Revision ID: 0014_tenant_shares
Revises: 0013_durable_results
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobstore.schema import UTCDateTime

revision = "0014_tenant_shares"
down_revision = "0013_durable_results"
branch_labels = None
depends_on = None

_WAITING = "state = 'queued' AND attempts = 0"


def upgrade() -> None:
    op.create_table(
        "tenant_shares",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    op.add_column("jobs", sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("ranked_at", UTCDateTime, nullable=True))
    # jobs queued before the upgrade keep their place: priority 0 ranks a job at its creation
    op.execute("UPDATE jobs SET ranked_at = created_at")
    op.create_index(
        "ix_jobs_waiting",
        "jobs",
        ["tenant", "ranked_at", "id"],
        postgresql_where=sa.text(_WAITING),
        sqlite_where=sa.text(_WAITING),
    )
    op.add_column(
        "runware_capacity",
        sa.Column("backlog", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("runware_capacity", sa.Column("adaptive_limit", sa.Float(), nullable=True))


def downgrade() -> None:
    # native DROP COLUMNs: batch mode would rebuild `jobs` and `runware_capacity` on SQLite
    # and lose the triggers that name them
    op.execute("ALTER TABLE runware_capacity DROP COLUMN adaptive_limit")
    op.execute("ALTER TABLE runware_capacity DROP COLUMN backlog")
    op.drop_index("ix_jobs_waiting", table_name="jobs")
    op.execute("ALTER TABLE jobs DROP COLUMN ranked_at")
    op.execute("ALTER TABLE jobs DROP COLUMN priority")
    op.drop_table("tenant_shares")
