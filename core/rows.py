"""Between table rows and job values: reading jobs, images and events, and the SQL that
differs by backend."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import InterfaceError, OperationalError

from core.errors import StoreUnavailable
from core.jobs import ImageResult, Job, JobEvent, JobState
from core.records import from_micros
from core.tables import events, results


def images_of(conn: Connection, job_id: str) -> list[ImageResult]:
    rows = conn.execute(
        select(results).where(results.c.job_id == job_id).order_by(results.c.received_at)
    ).all()
    return [
        ImageResult(
            image_uuid=r.image_uuid,
            image_url=r.image_url,
            seed=r.seed,
            cost_usd=from_micros(r.cost_micros),
            nsfw=r.nsfw,
            source=r.source,
            late=r.late,
            received_at=r.received_at,
            has_inline_data=r.image_data is not None,
        )
        for r in rows
    ]


def events_of(conn: Connection, job_id: str) -> list[JobEvent]:
    rows = conn.execute(select(events).where(events.c.job_id == job_id).order_by(events.c.id)).all()
    return [JobEvent(r.at, r.kind, r.from_state, r.to_state, r.detail) for r in rows]


@contextmanager
def translated_errors() -> Iterator[None]:
    """Losing the database surfaces as StoreUnavailable, whatever the driver."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        # the driver's text may carry connection details; the type is enough to act on
        cause = type(exc.orig or exc).__name__
        raise StoreUnavailable(f"the job store cannot be reached ({cause})") from exc


def insert_ignoring_duplicates(conn: Connection) -> Any:
    dialect_insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return dialect_insert(results).on_conflict_do_nothing(
        index_elements=["task_uuid", "image_uuid"]
    )


def job_from_row(row: Row[Any], images: Iterable[ImageResult], history: list[JobEvent]) -> Job:
    return Job(
        id=row.id,
        task_uuid=row.task_uuid,
        tenant=row.tenant,
        state=JobState(row.state),
        request=row.request,
        number_results=row.number_results,
        images_received=row.images_received,
        cost_usd=from_micros(row.cost_micros) or Decimal(0),
        attempts=row.attempts,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deadline_at=row.deadline_at,
        claimed_at=row.claimed_at,
        submitted_at=row.submitted_at,
        finished_at=row.finished_at,
        idempotency_key=row.idempotency_key,
        failure_reason=row.failure_reason,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        failure_parameter=row.failure_parameter,
        retry_of=row.retry_of,
        estimate_usd=from_micros(row.estimate_micros) or Decimal(0),
        images=list(images),
        events=history,
    )
