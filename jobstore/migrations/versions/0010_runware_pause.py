"""admission: a fleet-wide pause of first claims per Runware key, set by a rate refusal

Revision ID: 0010_runware_pause
Revises: 0009_fleet_leases
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobstore.schema import UTCDateTime

revision = "0010_runware_pause"
down_revision = "0009_fleet_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runware_capacity", sa.Column("paused_until", UTCDateTime, nullable=True))


def downgrade() -> None:
    # a native DROP COLUMN (SQLite 3.35+): batch mode would rebuild `runware_capacity` on
    # SQLite, and the capacity trigger on `jobs` that names it would fail the rename
    op.execute("ALTER TABLE runware_capacity DROP COLUMN paused_until")
