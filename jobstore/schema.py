"""The store's tables, one definition for PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


Json = JSON().with_variant(JSONB(), "postgresql")

metadata = MetaData()

# a job waiting for admission: queued, never claimed (a retry keeps its claim)
WAITING = "state = 'queued' AND attempts = 0"

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("task_uuid", String(36), nullable=False, unique=True),
    Column("tenant", String(64), nullable=False),
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("request", Json, nullable=False),
    Column("number_results", Integer, nullable=False),
    Column("images_received", Integer, nullable=False, default=0),
    # micro-dollars: exact sums on both backends without Decimal columns
    Column("cost_micros", BigInteger, nullable=False, default=0),
    # what the job is expected to cost (farmdomain.pricing), reserved against the budgets
    Column("estimate_micros", BigInteger, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deadline_at", UTCDateTime, nullable=False),
    Column("claimed_at", UTCDateTime),
    Column("submitted_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("failure_reason", String(32)),
    Column("failure_code", String(128)),
    Column("failure_message", Text),
    Column("failure_parameter", String(128)),
    Column("retry_of", String(36), ForeignKey("jobs.id")),
    # where the job's terminal event is POSTed (farmdomain.callbacks); None: nowhere
    Column("callback_url", Text),
    # the Runware key whose admission unit the job holds from its claim to its terminal
    # transition (runware_capacity.key_id); None: it never held one
    Column("capacity_key", String(64)),
    # the caller's priority inside its tenant (farmdomain.admission), and the job's place in
    # its tenant's line: created_at moved earlier by priority times the aging step (0014)
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("ranked_at", UTCDateTime),
    UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
    Index("ix_jobs_state_updated_at", "state", "updated_at"),
    Index("ix_jobs_claimed_at", "claimed_at"),
    # GET /v1/jobs: a tenant's jobs newest first, a page after a position (jobstore.listing)
    Index("ix_jobs_tenant_created_at_id", "tenant", "created_at", "id"),
    # a tenant's jobs claimed in a budget's period, summed at every first claim (0012)
    Index("ix_jobs_tenant_claimed_at", "tenant", "claimed_at"),
    # the jobs waiting for admission, each tenant's in line order (jobstore.waiting)
    Index(
        "ix_jobs_waiting",
        "tenant",
        "ranked_at",
        "id",
        postgresql_where=text(WAITING),
        sqlite_where=text(WAITING),
    ),
)

# The fleet's admission count per Runware key: units held by jobs claimed and not yet
# terminal. Claims take units under the row's lock (jobstore.capacity); a trigger on `jobs`
# gives each back in its job's terminal transition (migration 0006_runware_capacity).
runware_capacity = Table(
    "runware_capacity",
    metadata,
    # farmdomain.admission.runware_key_id: a digest, never the key
    Column("key_id", String(64), primary_key=True),
    Column("held", Integer, nullable=False),
    # FLUXFARM_RUNWARE_MAX_IN_FLIGHT of the process that claimed last; 0: uncapped
    Column("cap", Integer, nullable=False),
    # no first claim of the key before this: Runware asked the fleet to slow down (0010)
    Column("paused_until", UTCDateTime),
    # jobs wait for admission: first claims by submit messages take nothing, so the
    # dispatcher's fair order decides who goes next (0014)
    Column("backlog", Boolean, nullable=False, server_default=text("false")),
    # the fleet's limit under the cap, lowered on Runware's pushback (farmdomain.admission.
    # AdaptiveLimit); None: the cap
    Column("adaptive_limit", Float),
)

# Each tenant's weight in the dispatcher's fair sharing (farmdomain.admission.FairShare); a
# tenant without a row weighs DEFAULT_WEIGHT (0014).
tenant_shares = Table(
    "tenant_shares",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("weight", Float, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Each tenant's hard budgets, in micro-dollars (None: no limit for that period), checked
# under the row's lock by every first claim of its jobs (jobstore.budgets); the alert fires
# once a period's use passes soft_fraction of it.
tenant_budgets = Table(
    "tenant_budgets",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("daily_micros", BigInteger),
    Column("monthly_micros", BigInteger),
    Column("soft_fraction", Float, nullable=False),
)

results = Table(
    "results",
    metadata,
    Column("task_uuid", String(36), primary_key=True),
    Column("image_uuid", String(64), primary_key=True),
    Column("job_id", String(36), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("image_url", Text),
    Column("image_data", Text),
    Column("seed", BigInteger),
    Column("cost_micros", BigInteger),
    # a webhook's cost that did not fit the job's estimate (farmdomain.claims): kept for the
    # operator, and out of every spend figure, since Runware did not say it billed it
    Column("unconfirmed_cost_micros", BigInteger),
    Column("nsfw", Boolean),
    Column("source", String(16), nullable=False),
    Column("late", Boolean, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)

# What the farm kept of each result: its copy in the results store, or why there is none yet.
# A row of its own beside `results`, written by the copy task only, so recording a result
# (the webhook's hot path) writes nothing more than before.
result_copies = Table(
    "result_copies",
    metadata,
    Column("task_uuid", String(36), primary_key=True),
    Column("image_uuid", String(64), primary_key=True),
    Column("job_id", String(36), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("storage_key", String(255)),
    Column("sha256", String(64)),
    Column("bytes", BigInteger),
    Column("content_type", String(32)),
    Column("stored_at", UTCDateTime),
    Column("failure_reason", String(32)),
    Column("failure_message", Text),
    # no further attempt: the image was refused, or its URL expired before a copy landed
    Column("given_up_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    # the image was deleted from the results store by its tenant's retention (0013)
    Column("deleted_at", UTCDateTime),
    # retention finds the oldest stored images first
    Index("ix_result_copies_stored_at", "stored_at"),
)

# How many days each tenant's images are kept, where it differs from the farm's
# FLUXFARM_RESULTS_RETENTION_DAYS (jobstore.retention); a table of its own (0013).
tenant_retention = Table(
    "tenant_retention",
    metadata,
    Column("tenant", String(64), primary_key=True),
    # 0: kept for ever
    Column("days", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("job_id", String(36), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16)),
    Column("detail", Json, nullable=False),
)


api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("label", String(128), nullable=False),
    # SHA-256 of the bearer token: the token itself is shown once and never stored
    Column("token_digest", String(64), nullable=False, unique=True),
    Column("can_write", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)


# -- callbacks: each tenant's signing secrets, the outbox and every delivery attempt ------

callback_secrets = Table(
    "callback_secrets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    # kept as given, since signing needs it: whoever reads this table can sign callbacks
    Column("secret", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # None: the tenant's current secret; else it signs until then (a rotation's overlap)
    Column("retires_at", UTCDateTime),
    # one current secret per tenant, even when two processes create it at once
    Index(
        "uq_callback_secrets_current",
        "tenant",
        unique=True,
        postgresql_where=text("retires_at IS NULL"),
        sqlite_where=text("retires_at IS NULL"),
    ),
)

# One row per terminal job with a callbackUrl, written by a trigger on `jobs` in the
# transition's own statement (migration 0005_callback_events).
callback_events = Table(
    "callback_events",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.id"), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("type", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    # attempts made since the schedule last (re)started: its position in the schedule
    Column("tries", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # when an attempt is next due; while one runs, when its lease ends
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    # when a delivery message was last sent for the event (beat's drive, or a retry's
    # countdown, as of when it falls due): the drive sends it again only once this is old
    Column("sent_at", UTCDateTime),
    # the signed body, fixed at the first attempt so that every attempt sends the same
    Column("body", Text),
    Index("ix_callback_events_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_callback_events_created_at", "created_at"),
)

callback_attempts = Table(
    "callback_attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("job_id", String(36), ForeignKey("callback_events.job_id"), nullable=False, index=True),
    Column("at", UTCDateTime, nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Float, nullable=False),
    Column("answer", Text, nullable=False),
    Column("error", Text),
)

# Fleet-wide leases (jobstore.leases): one holder of a named duty at a time, until
# expires_at; finished_at is when the last holder gave it back (the reaper's last pass).
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
)
