"""result copies: each result's image as kept in the results store

Revision ID: 0004_result_copies
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import jobstore.schema

revision = "0004_result_copies"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = jobstore.schema.UTCDateTime(timezone=True)
    op.create_table(
        "result_copies",
        sa.Column("task_uuid", sa.String(length=36), nullable=False),
        sa.Column("image_uuid", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("storage_key", sa.String(length=255), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("content_type", sa.String(length=32), nullable=True),
        sa.Column("stored_at", when, nullable=True),
        sa.Column("failure_reason", sa.String(length=32), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("given_up_at", when, nullable=True),
        sa.Column("updated_at", when, nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("task_uuid", "image_uuid"),
    )
    with op.batch_alter_table("result_copies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_result_copies_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("result_copies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_result_copies_job_id"))
    op.drop_table("result_copies")
