"""admission: the fleet's in-flight count per Runware key, and the unit each job holds

Revision ID: 0006_runware_capacity
Revises: 0005_callback_events
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobstore.migrations.triggers import (
    create_state_trigger,
    drop_state_trigger,
    terminal_transition,
)

revision = "0006_runware_capacity"
down_revision = "0005_callback_events"
branch_labels = None
depends_on = None

# The unit is given back by the database itself, inside whatever statement makes a job
# that holds one terminal (a failure, a cancel, a completing result, the reaper's timeout):
# the count commits or rolls back with the transition, whichever code path made it.
_WHEN = terminal_transition("OLD.capacity_key IS NOT NULL")
_RELEASE = "UPDATE runware_capacity SET held = held - 1 WHERE key_id = OLD.capacity_key"
_TRIGGER = ("jobs_capacity_release", "runware_capacity_release")


def upgrade() -> None:
    op.create_table(
        "runware_capacity",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("cap", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("capacity_key", sa.String(length=64), nullable=True))
    create_state_trigger(*_TRIGGER, _WHEN, _RELEASE)


def downgrade() -> None:
    drop_state_trigger(*_TRIGGER)
    # a native DROP COLUMN (SQLite 3.35+): batch mode would rebuild `jobs` on SQLite and
    # lose the callback trigger of 0005 with it
    op.execute("ALTER TABLE jobs DROP COLUMN capacity_key")
    op.drop_table("runware_capacity")
