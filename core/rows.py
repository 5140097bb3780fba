"""The store's SQL: the hot transitions as statements built once, rows read back into job
values, and what differs between PostgreSQL and SQLite."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BindParameter,
    Boolean,
    Connection,
    Row,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import InterfaceError, OperationalError

from core.errors import StoreUnavailable
from core.jobs import IN_FLIGHT_STATES, TERMINAL_STATES, ImageResult, Job, JobEvent, JobState
from core.records import ResultOutcome, Transition, from_micros
from core.tables import events, jobs, results

EVENT_FIELDS = ("at", "kind", "from_state", "to_state", "detail")


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


_RESULT_FIELDS = (
    "task_uuid",
    "image_uuid",
    "job_id",
    "image_url",
    "image_data",
    "seed",
    "cost_micros",
    "nsfw",
    "source",
    "late",
    "received_at",
)


def _result_param(name: str) -> BindParameter[Any]:
    return bindparam(f"result_{name}", type_=results.c[name].type)


# Written out because SQLAlchemy (2.0) cannot cache its ON CONFLICT constructs: built
# with insert().on_conflict_do_nothing(), this statement was compiled again for every
# webhook. PostgreSQL and SQLite (3.35+) both take this text.
# a result, parameters `result_<column>`; a duplicate (taskUUID, imageUUID) returns no row
INSERT_RESULT = (
    text(
        "INSERT INTO results (task_uuid, image_uuid, job_id, image_url, image_data, seed,"
        " cost_micros, nsfw, source, late, received_at)"
        " VALUES (:result_task_uuid, :result_image_uuid, :result_job_id, :result_image_url,"
        " :result_image_data, :result_seed, :result_cost_micros, :result_nsfw, :result_source,"
        " :result_late, :result_received_at)"
        " ON CONFLICT (task_uuid, image_uuid) DO NOTHING RETURNING image_uuid"
    )
    .bindparams(*map(_result_param, _RESULT_FIELDS))
    .columns(results.c.image_uuid)
)


def event_params(
    kind: str,
    from_state: JobState | None,
    to_state: JobState | None,
    detail: dict[str, Any],
    at: datetime,
) -> dict[str, Any]:
    """The parameters of the event a `logged` statement records."""
    return {
        "event_at": at,
        "event_kind": kind,
        "event_from_state": from_state.value if from_state else None,
        "event_to_state": to_state.value if to_state else None,
        "event_detail": detail,
    }


def _event_value(name: str) -> Any:
    return bindparam(f"event_{name}", type_=events.c[name].type)


INSERT_EVENT = insert(events).values(
    job_id=bindparam("event_job_id", type_=events.c.job_id.type),
    **{name: _event_value(name) for name in EVENT_FIELDS},
)


@functools.cache
def _with_event(statement: Any) -> Any:
    """`statement` and the INSERT of its event as one PostgreSQL statement: the event
    reads the changed row from a CTE."""
    changed = statement.cte("changed")
    values = [_event_value(name).label(name) for name in EVENT_FIELDS]
    logged = (
        insert(events)
        .from_select(["job_id", *EVENT_FIELDS], select(changed.c.id, *values))
        .cte("logged")
    )
    return select(changed).add_cte(logged)


def execute_with_events(conn: Connection, statement: Any, params: dict[str, Any]) -> list[Row[Any]]:
    """Run `statement` (a prebuilt INSERT or UPDATE of jobs RETURNING the rows, executed
    with `params`, event_params included) and record the event for every job it touched.

    Statements are built once and take bind parameters: building one per call, and its
    cache key, cost more CPU than its round trip. On PostgreSQL the event INSERT joins the
    statement, so the transition is atomic on its own and costs one round trip; elsewhere
    it is a second INSERT, and the caller's transaction holds the two together.
    """
    if conn.dialect.name == "postgresql":
        return list(conn.execute(_with_event(statement), params).all())
    rows = list(conn.execute(statement, params).all())
    if rows:
        conn.execute(INSERT_EVENT, [{**params, "event_job_id": row.id} for row in rows])
    return rows


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


def _claim_statement(retry: bool) -> Any:
    queued = jobs.c.state == JobState.QUEUED.value
    # a retry re-takes its own claim: the job is still `submitting` from its last attempt
    claimable = or_(queued, jobs.c.state == JobState.SUBMITTING.value) if retry else queued
    return (
        update(jobs)
        .where(_JOB_IDS, jobs.c.attempts == bindparam("expected_attempts"), claimable)
        .values(
            state=JobState.SUBMITTING.value,
            attempts=jobs.c.attempts + 1,
            claimed_at=func.coalesce(jobs.c.claimed_at, _NOW),
            updated_at=_NOW,
        )
        .returning(*jobs.c)
    )


CLAIM = {retry: _claim_statement(retry) for retry in (False, True)}

# the row lock makes `late` and the completion decision see the latest state: without it
# concurrent results each read `submitted` and each log "completed"
LOCK_JOB_OF_TASK = (
    select(jobs.c.id, jobs.c.state)
    .where(jobs.c.task_uuid == bindparam("task_uuid", type_=jobs.c.task_uuid.type))
    .with_for_update()
)

_RECEIVED = jobs.c.images_received + 1
_COMPLETES = jobs.c.state.in_([s.value for s in IN_FLIGHT_STATES]) & (
    jobs.c.number_results <= _RECEIVED
)
# one more result for job_id (costing `cost` micro-dollars); succeeded if it was the last
COUNT_RESULT = (
    update(jobs)
    .where(jobs.c.id == _JOB_ID)
    .values(
        images_received=_RECEIVED,
        cost_micros=jobs.c.cost_micros + bindparam("cost", type_=jobs.c.cost_micros.type),
        state=case((_COMPLETES, JobState.SUCCEEDED.value), else_=jobs.c.state),
        finished_at=case((_COMPLETES, _NOW), else_=jobs.c.finished_at),
        updated_at=_NOW,
    )
    .returning(*jobs.c)
)


_STATE_LIST = ARRAY(jobs.c.state.type)
# PostgreSQL: LOCK_JOB_OF_TASK, INSERT_RESULT, COUNT_RESULT and the completed event in one
# autocommitted statement. Its parts share one snapshot, taken before any wait for the
# job's row lock, so the job is read only where a concurrent result's commit shows: in
# `locked` (FOR UPDATE returns the row as that commit left it) and in the UPDATE (which
# re-reads the row it waited for). ON CONFLICT also sees that commit's row, so a duplicate
# stores, counts and logs nothing.
# Takes the parameters `result_<column>` but job_id and late, which come from the job;
# returns `prior_state` (NULL: no job has the task), `late` (NULL: a duplicate),
# `completed` and the job as counted.
RECORD_RESULT = (
    text(
        "WITH locked AS ("
        " SELECT id, state FROM jobs WHERE task_uuid = :result_task_uuid FOR UPDATE"
        "), stored AS ("
        " INSERT INTO results (task_uuid, image_uuid, job_id, image_url, image_data, seed,"
        " cost_micros, nsfw, source, late, received_at)"
        " SELECT :result_task_uuid, :result_image_uuid, locked.id, :result_image_url,"
        " :result_image_data, :result_seed, :result_cost_micros, :result_nsfw, :result_source,"
        " locked.state = ANY(:terminal_states), :result_received_at"
        " FROM locked"
        " ON CONFLICT (task_uuid, image_uuid) DO NOTHING"
        " RETURNING job_id, cost_micros, source, late, received_at"
        "), counted AS ("
        " UPDATE jobs SET images_received = jobs.images_received + 1,"
        " cost_micros = jobs.cost_micros + coalesce(stored.cost_micros, 0),"
        " state = CASE WHEN jobs.state = ANY(:in_flight_states)"
        " AND jobs.number_results <= jobs.images_received + 1"
        " THEN :succeeded ELSE jobs.state END,"
        " finished_at = CASE WHEN jobs.state = ANY(:in_flight_states)"
        " AND jobs.number_results <= jobs.images_received + 1"
        " THEN stored.received_at ELSE jobs.finished_at END,"
        " updated_at = stored.received_at"
        " FROM stored WHERE jobs.id = stored.job_id"
        " RETURNING jobs.*"
        "), logged AS ("
        " INSERT INTO events (job_id, at, kind, from_state, to_state, detail)"
        " SELECT counted.id, stored.received_at, 'completed', locked.state, counted.state,"
        " jsonb_build_object('images', counted.images_received, 'source', stored.source)"
        " FROM counted, locked, stored"
        " WHERE counted.state = :succeeded AND locked.state = ANY(:in_flight_states)"
        " RETURNING job_id"
        ")"
        " SELECT locked.state AS prior_state, stored.late,"
        " logged.job_id IS NOT NULL AS completed, counted.*"
        " FROM locked LEFT JOIN stored ON true LEFT JOIN counted ON true"
        " LEFT JOIN logged ON true"
    )
    .bindparams(
        *(_result_param(name) for name in _RESULT_FIELDS if name not in ("job_id", "late")),
        bindparam("terminal_states", sorted(s.value for s in TERMINAL_STATES), type_=_STATE_LIST),
        bindparam("in_flight_states", [s.value for s in IN_FLIGHT_STATES], type_=_STATE_LIST),
        bindparam("succeeded", JobState.SUCCEEDED.value, type_=jobs.c.state.type),
    )
    .columns(
        prior_state=jobs.c.state.type,
        late=results.c.late.type,
        completed=Boolean(),
        **{column.name: column.type for column in jobs.c},
    )
)


def execute_record_result(
    conn: Connection, params: dict[str, Any]
) -> tuple[ResultOutcome, Transition | None]:
    """Store a result once by (taskUUID, imageUUID), count it against its job and complete
    the job with its last one; `params` as RECORD_RESULT's. Returns what recording did, and
    the job's transition if this result completed it.

    On PostgreSQL this is RECORD_RESULT, one round trip; elsewhere its steps run in the
    caller's transaction, the job's row lock taken first.
    """
    if conn.dialect.name == "postgresql":
        row = conn.execute(RECORD_RESULT, params).first()
        prior, late = (None, None) if row is None else (row.prior_state, row.late)
        completed = row if row is not None and row.completed else None
    else:
        prior, late, completed = _record_in_steps(conn, params)
    if prior is None:
        return ResultOutcome.UNKNOWN_TASK, None
    if late is None:
        return ResultOutcome.DUPLICATE, None
    outcome = ResultOutcome.LATE if late else ResultOutcome.ACCEPTED
    if completed is None:
        return outcome, None
    job = job_from_row(completed, [], [])
    return outcome, Transition(job, JobState(prior), JobState.SUCCEEDED)


def _record_in_steps(
    conn: Connection, params: dict[str, Any]
) -> tuple[str | None, bool | None, Row[Any] | None]:
    """RECORD_RESULT's prior_state, late and, if completed, the job's row."""
    job = conn.execute(LOCK_JOB_OF_TASK, {"task_uuid": params["result_task_uuid"]}).first()
    if job is None:
        return None, None, None
    late = JobState(job.state) in TERMINAL_STATES
    stored = conn.execute(INSERT_RESULT, params | {"result_job_id": job.id, "result_late": late})
    if stored.first() is None:
        return job.state, None, None
    now = params["result_received_at"]
    counted = {"job_id": job.id, "cost": params["result_cost_micros"] or 0, "now": now}
    row = conn.execute(COUNT_RESULT, counted).one()
    if late or row.state != JobState.SUCCEEDED.value:
        return job.state, late, None
    detail = {"images": row.images_received, "source": params["result_source"]}
    event = event_params("completed", JobState(job.state), JobState.SUCCEEDED, detail, now)
    conn.execute(INSERT_EVENT, {"event_job_id": job.id} | event)
    return job.state, late, row


@functools.cache
def transition_statement(before: str, target: str, fields: tuple[str, ...]) -> Any:
    """before -> target for the jobs `job_ids`, setting `fields` from the parameters
    `set_<field>`."""
    return (
        update(jobs)
        .where(_JOB_IDS, jobs.c.state == before)
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
        estimate_usd=from_micros(row.estimate_micros) or Decimal(0),
        images=list(images),
        events=history,
    )
