"""callbacks: a job's callbackUrl, tenants' signing secrets, the outbox of terminal events
and every delivery attempt

Revision ID: 0005_callback_events
Revises: 0004_result_copies
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import jobstore.schema
from jobstore.migrations.triggers import (
    create_state_trigger,
    drop_state_trigger,
    terminal_transition,
)

revision = "0005_callback_events"
down_revision = "0004_result_copies"
branch_labels = None
depends_on = None

# The outbox row is written by the database itself, inside whatever statement makes a job
# with a callbackUrl terminal (a transition, a completing result, a cancel): the event
# commits or rolls back with the transition, whichever code path made it.
_WHEN = terminal_transition("NEW.callback_url IS NOT NULL")
_INSERT = """INSERT INTO callback_events
  (job_id, tenant, url, type, status, tries, created_at, next_attempt_at)
  VALUES (NEW.id, NEW.tenant, NEW.callback_url, 'job.' || NEW.state, 'pending', 0,
    NEW.updated_at, NEW.updated_at)"""
_TRIGGER = ("jobs_callback_event", "callback_event_of_terminal_job")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
    op.create_table(
        "callback_secrets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", jobstore.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retires_at", jobstore.schema.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("callback_secrets", schema=None) as batch_op:
        batch_op.create_index("ix_callback_secrets_tenant", ["tenant"], unique=False)
    op.create_index(
        "uq_callback_secrets_current",
        "callback_secrets",
        ["tenant"],
        unique=True,
        postgresql_where=sa.text("retires_at IS NULL"),
        sqlite_where=sa.text("retires_at IS NULL"),
    )
    op.create_table(
        "callback_events",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("created_at", jobstore.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", jobstore.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", jobstore.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("job_id"),
    )
    with op.batch_alter_table("callback_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_callback_events_status_next_attempt_at",
            ["status", "next_attempt_at"],
            unique=False,
        )
        batch_op.create_index("ix_callback_events_created_at", ["created_at"], unique=False)
    op.create_table(
        "callback_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("at", jobstore.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["callback_events.job_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("callback_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_callback_attempts_job_id", ["job_id"], unique=False)
    create_state_trigger(*_TRIGGER, _WHEN, _INSERT)


def downgrade() -> None:
    drop_state_trigger(*_TRIGGER)
    op.drop_table("callback_attempts")
    op.drop_table("callback_events")
    op.drop_table("callback_secrets")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("callback_url")
