"""Listing a tenant's jobs: newest first, filtered, one page after a position
(farmdomain.listing), read along the index on (tenant, created_at, id)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Engine, literal, select, tuple_

from farmdomain.listing import JobPage, JobQuery, Position
from jobstore.schema import jobs
from jobstore.statements import details_of, job_from_row, translated_errors


def _utc(at: datetime) -> datetime:
    # SQLite keeps times as text without their offset: compare them all in UTC
    return at.astimezone(UTC)


def _conditions(tenant: str, query: JobQuery) -> list[ColumnElement[bool]]:
    c = jobs.c
    found = [c.tenant == tenant]
    if query.states:
        found.append(c.state.in_([state.value for state in query.states]))
    if query.created_after is not None:
        found.append(c.created_at > _utc(query.created_after))
    if query.created_before is not None:
        found.append(c.created_at < _utc(query.created_before))
    if query.idempotency_key is not None:
        found.append(c.idempotency_key == query.idempotency_key)
    if query.after is not None:
        after = (
            literal(_utc(query.after.created_at), c.created_at.type),
            literal(query.after.job_id, c.id.type),
        )
        found.append(tuple_(c.created_at, c.id) < tuple_(*after))
    return found


def list_jobs(engine: Engine, tenant: str, query: JobQuery) -> JobPage:
    """`tenant`'s jobs that `query` selects, each with its images and events; the next
    page's position when more jobs follow."""
    statement = (
        select(jobs)
        .where(*_conditions(tenant, query))
        .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
        # one row past the page says whether another page follows
        .limit(query.limit + 1)
    )
    with translated_errors(), engine.connect() as conn:
        rows = conn.execute(statement).all()
        page = rows[: query.limit]
        images, history = details_of(conn, [row.id for row in page])
    last = page[-1] if len(rows) > query.limit else None
    return JobPage(
        [job_from_row(row, images[row.id], history[row.id]) for row in page],
        None if last is None else Position(last.created_at, last.id),
    )
