"""results: a job's admission unit given back when its last result arrives (it succeeds
later, once every image is stored), images deleted by retention, and each tenant's
retention

Revision ID: 0013_durable_results
Revises: 0012_tenant_budgets
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import jobstore.schema
from jobstore.migrations.triggers import create_column_trigger, drop_state_trigger

revision = "0013_durable_results"
down_revision = "0012_tenant_budgets"
branch_labels = None
depends_on = None

# Runware is done with a job once its last result is recorded: the recording statement
# clears the job's capacity_key then, and this gives the unit back in that statement. The
# terminal transition that follows (after the copies) finds no key and gives back nothing.
_WHEN = "OLD.capacity_key IS NOT NULL AND NEW.capacity_key IS NULL"
_RELEASE = "UPDATE runware_capacity SET held = held - 1 WHERE key_id = OLD.capacity_key"
_TRIGGER = ("jobs_capacity_release_received", "runware_capacity_release_received")


def upgrade() -> None:
    op.add_column(
        "result_copies",
        sa.Column("deleted_at", jobstore.schema.UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_result_copies_stored_at", "result_copies", ["stored_at"])
    op.create_table(
        "tenant_retention",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("updated_at", jobstore.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    create_column_trigger("capacity_key", *_TRIGGER, _WHEN, _RELEASE)


def downgrade() -> None:
    drop_state_trigger(*_TRIGGER)
    op.drop_table("tenant_retention")
    op.drop_index("ix_result_copies_stored_at", table_name="result_copies")
    # a native DROP COLUMN: batch mode would rebuild the table on SQLite
    op.execute("ALTER TABLE result_copies DROP COLUMN deleted_at")
