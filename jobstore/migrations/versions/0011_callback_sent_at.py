"""callbacks: when a delivery message was last sent for each event, so that beat's drive
does not send another for an event whose message is still on its way

Revision ID: 0011_callback_sent_at
Revises: 0010_runware_pause
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import jobstore.schema

revision = "0011_callback_sent_at"
down_revision = "0010_runware_pause"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "callback_events",
        sa.Column("sent_at", jobstore.schema.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    # a native DROP COLUMN: batch mode would rebuild the table on SQLite
    op.execute("ALTER TABLE callback_events DROP COLUMN sent_at")
