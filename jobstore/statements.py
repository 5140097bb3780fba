"""The store's SQL: the hot transitions as statements built once, and rows read back into
job values."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Row,
    and_,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import InterfaceError, OperationalError

from farmdomain.errors import StoreUnavailable
from farmdomain.jobs import ImageResult, Job, JobEvent, JobState
from farmdomain.values import from_micros
from jobstore import dialects
from jobstore.schema import events, jobs, result_copies, results


def _images(conn: Connection, which: ColumnElement[bool]) -> list[tuple[str, ImageResult]]:
    """The images of the jobs `which` selects among results, as (job id, image), in the
    order they arrived."""
    kept = result_copies.c
    rows = conn.execute(
        select(
            results,
            kept.storage_key,
            kept.sha256,
            kept.bytes.label("stored_bytes"),
            kept.deleted_at,
        )
        .outerjoin(
            result_copies,
            (kept.task_uuid == results.c.task_uuid) & (kept.image_uuid == results.c.image_uuid),
        )
        .where(which)
        .order_by(results.c.received_at)
    ).all()
    return [
        (
            r.job_id,
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
                storage_key=r.storage_key,
                sha256=r.sha256,
                stored_bytes=r.stored_bytes,
                deleted_at=r.deleted_at,
            ),
        )
        for r in rows
    ]


def _events(conn: Connection, which: ColumnElement[bool]) -> list[tuple[str, JobEvent]]:
    rows = conn.execute(select(events).where(which).order_by(events.c.id)).all()
    return [(r.job_id, JobEvent(r.at, r.kind, r.from_state, r.to_state, r.detail)) for r in rows]


def images_of(conn: Connection, job_id: str) -> list[ImageResult]:
    return [image for _, image in _images(conn, results.c.job_id == job_id)]


def events_of(conn: Connection, job_id: str) -> list[JobEvent]:
    return [event for _, event in _events(conn, events.c.job_id == job_id)]


def details_of(
    conn: Connection, job_ids: Sequence[str]
) -> tuple[dict[str, list[ImageResult]], dict[str, list[JobEvent]]]:
    """The images and the events of each of `job_ids`, two queries for them all."""
    images: dict[str, list[ImageResult]] = {job_id: [] for job_id in job_ids}
    history: dict[str, list[JobEvent]] = {job_id: [] for job_id in job_ids}
    for job_id, image in _images(conn, results.c.job_id.in_(job_ids)):
        images[job_id].append(image)
    for job_id, event in _events(conn, events.c.job_id.in_(job_ids)):
        history[job_id].append(event)
    return images, history


@contextmanager
def translated_errors() -> Iterator[None]:
    """Losing the database surfaces as StoreUnavailable, whatever the driver."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise store_unavailable(exc) from exc


def store_unavailable(exc: Exception) -> StoreUnavailable:
    """The driver's error `exc` as StoreUnavailable, named by its type alone: the driver's
    text may carry connection details."""
    cause = type(getattr(exc, "orig", None) or exc).__name__
    return StoreUnavailable(f"the job store cannot be reached ({cause})")


def execute_with_events(conn: Connection, statement: Any, params: dict[str, Any]) -> list[Row[Any]]:
    """Run `statement` (a prebuilt INSERT or UPDATE of jobs RETURNING the rows, executed
    with `params`, event_params included) and record the event for every job it touched.

    Statements are built once and take bind parameters: building one per call, and its
    cache key, cost more CPU than its round trip. Where the dialect logs in one statement
    the transition is atomic on its own; elsewhere the caller's transaction holds the two
    statements together.
    """
    return dialects.of(conn).execute_with_events(conn, statement, params)


def execute_with_event(conn: Connection, statement: Any, params: dict[str, Any]) -> Row[Any] | None:
    """`execute_with_events` for a statement that touches at most one job."""
    rows = execute_with_events(conn, statement, params)
    return rows[0] if rows else None


# The transitions on the hot path, built once with bind parameters (see execute_with_event)
_NEW_JOB_FIELDS = (
    "id",
    "task_uuid",
    "tenant",
    "idempotency_key",
    "request_hash",
    "state",
    "request",
    "number_results",
    "images_received",
    "cost_micros",
    "estimate_micros",
    "attempts",
    "created_at",
    "updated_at",
    "deadline_at",
    "retry_of",
    "callback_url",
    "priority",
    "ranked_at",
)
CREATE_JOB = (
    insert(jobs)
    .values({name: bindparam(f"new_{name}", type_=jobs.c[name].type) for name in _NEW_JOB_FIELDS})
    .returning(*jobs.c)
)
# Many jobs, executed with a list of rows keyed by column: SQLAlchemy sends them as
# "insertmanyvalues" pages (one INSERT of up to 1,000 rows each) and gives the rows back in
# the order of the list. The parameters keep the columns' names because that order is
# restored through the primary key, which SQLAlchemy finds among the parameters by name.
CREATE_JOBS = insert(jobs).returning(*jobs.c, sort_by_parameter_order=True)
_NOW = bindparam("now", type_=jobs.c.updated_at.type)
_JOB_ID = bindparam("job_id", type_=jobs.c.id.type)
# the batch forms: `job_ids` is a list, expanded into IN (...) when executed
_JOB_IDS = jobs.c.id.in_(bindparam("job_ids", type_=jobs.c.id.type, expanding=True))


def state_among(*states: str) -> ColumnElement[bool]:
    """`jobs.state IN states`, for jobs found by their ids, written so no index serves it.

    The reaper's index on (state, updated_at) is there to find jobs by state. Asked for a
    few ids in one state, the planner may scan that index as well, reading every job in
    the state: with statistics from before a backlog, each claim read every queued job
    (2,000 pages a claim at 44,000 queued), claims slowed and the backlog grew. As an
    expression, the state is only checked on the rows the primary key finds.
    """
    return jobs.c.state.concat("").in_(states)


def _claim_statement(retry: bool) -> Any:
    """queued -> submitting; a retry re-takes its own claim (the job is still `submitting`
    from its last attempt, holding its admission unit).

    A first claim takes at most `free` of the jobs, each with a unit of `capacity_key`: the
    caller holds that key's row lock (jobstore.capacity), so `free` is exact. The inner
    SELECT picks the jobs; the outer WHERE checks them again, since PostgreSQL re-reads
    only the outer conditions of a row another transaction changed meanwhile.
    """
    claimable = and_(
        _JOB_IDS,
        jobs.c.attempts == bindparam("expected_attempts"),
        state_among(JobState.SUBMITTING.value if retry else JobState.QUEUED.value),
    )
    values: dict[str, Any] = {
        "state": JobState.SUBMITTING.value,
        "attempts": jobs.c.attempts + 1,
        "claimed_at": func.coalesce(jobs.c.claimed_at, _NOW),
        "updated_at": _NOW,
    }
    statement = update(jobs).where(claimable)
    if not retry:
        picked = (
            select(jobs.c.id)
            .where(claimable)
            .order_by(jobs.c.ranked_at, jobs.c.id)
            .limit(bindparam("free", type_=Integer()))
        )
        statement = statement.where(jobs.c.id.in_(picked))
        values["capacity_key"] = bindparam("capacity_key", type_=jobs.c.capacity_key.type)
    return statement.values(**values).returning(*jobs.c)


CLAIM = {retry: _claim_statement(retry) for retry in (False, True)}


@functools.cache
def transition_statement(before: str, target: str, fields: tuple[str, ...]) -> Any:
    """before -> target for the jobs `job_ids`, setting `fields` from the parameters
    `set_<field>`."""
    return (
        update(jobs)
        .where(_JOB_IDS, state_among(before))
        .values(
            state=target,
            updated_at=_NOW,
            **{name: bindparam(f"set_{name}", type_=jobs.c[name].type) for name in fields},
        )
        .returning(*jobs.c)
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
        callback_url=row.callback_url,
        estimate_usd=from_micros(row.estimate_micros) or Decimal(0),
        priority=row.priority,
        images=list(images),
        events=history,
    )
