"""Recording Runware's results: each stored once by (taskUUID, imageUUID), counted against
its job, and the job completed by its last image; many results in one statement on
PostgreSQL, in the caller's transaction step by step elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Row,
    String,
    Text,
    bindparam,
    case,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeEngine

from farmdomain.jobs import IN_FLIGHT_STATES, TERMINAL_STATES, JobState
from farmdomain.values import IncomingResult, ResultOutcome, Transition, to_micros
from jobstore.schema import jobs, results
from jobstore.statements import INSERT_EVENT, event_params, job_from_row

# Our own state names, written into the SQL once: bound as arrays they were dumped again
# for every result.
_TERMINAL = ", ".join(f"'{state.value}'" for state in sorted(TERMINAL_STATES))
_IN_FLIGHT = ", ".join(f"'{state.value}'" for state in IN_FLIGHT_STATES)
_SUCCEEDED = f"'{JobState.SUCCEEDED.value}'"


# PostgreSQL: every result of the batch in one autocommitted statement.
# `locked` takes the row locks of the batch's jobs in id order, so two batches sharing jobs
# wait for each other instead of deadlocking. The parts share one snapshot, taken before
# any wait for a lock, so a job is read only where a concurrent writer's commit shows: in
# `locked` (FOR UPDATE returns the row as that commit left it) and in the UPDATE (which
# re-reads the row it waited for). ON CONFLICT also sees that commit's result rows, so a
# duplicate stores, counts and logs nothing.
# One row per incoming result, in order: `job_id` and `prior_state` (NULL: no job has the
# task), `late` (NULL: a duplicate), `completed`, and the job as counted.
def _record_results_sql(incoming: str) -> str:
    """The statement, the batch's results read by the query `incoming` (columns task_uuid,
    image_uuid, image_url, image_data, seed, cost_micros, nsfw, position)."""
    return f"""
WITH incoming AS ({incoming}), locked AS (
  SELECT id, state, task_uuid FROM jobs
  WHERE task_uuid IN (SELECT task_uuid FROM incoming) ORDER BY id FOR UPDATE
), stored AS (
  INSERT INTO results (task_uuid, image_uuid, job_id, image_url, image_data, seed,
    cost_micros, nsfw, source, late, received_at)
  SELECT i.task_uuid, i.image_uuid, locked.id, i.image_url, i.image_data, i.seed,
    i.cost_micros, i.nsfw, CAST(:source AS VARCHAR), locked.state IN ({_TERMINAL}),
    :received_at
  FROM incoming i JOIN locked ON locked.task_uuid = i.task_uuid
  ON CONFLICT (task_uuid, image_uuid) DO NOTHING
  RETURNING task_uuid, image_uuid, job_id, cost_micros, late
), per_job AS (
  SELECT job_id, count(*) AS images, coalesce(sum(cost_micros), 0) AS cost
  FROM stored GROUP BY job_id
), counted AS (
  UPDATE jobs SET
    images_received = jobs.images_received + per_job.images,
    cost_micros = jobs.cost_micros + per_job.cost,
    state = CASE WHEN jobs.state IN ({_IN_FLIGHT})
      AND jobs.number_results <= jobs.images_received + per_job.images
      THEN {_SUCCEEDED} ELSE jobs.state END,
    finished_at = CASE WHEN jobs.state IN ({_IN_FLIGHT})
      AND jobs.number_results <= jobs.images_received + per_job.images
      THEN :received_at ELSE jobs.finished_at END,
    updated_at = :received_at
  FROM per_job WHERE jobs.id = per_job.job_id
  RETURNING jobs.*
), logged AS (
  INSERT INTO events (job_id, at, kind, from_state, to_state, detail)
  SELECT counted.id, :received_at, 'completed', locked.state, counted.state,
    jsonb_build_object('images', counted.images_received, 'source', CAST(:source AS VARCHAR))
  FROM counted JOIN locked ON locked.id = counted.id
  WHERE counted.state = {_SUCCEEDED} AND locked.state IN ({_IN_FLIGHT})
  RETURNING job_id
)
SELECT locked.id AS job_id, locked.state AS prior_state, stored.late,
  logged.job_id IS NOT NULL AS completed, counted.*
FROM incoming i
LEFT JOIN locked ON locked.task_uuid = i.task_uuid
LEFT JOIN stored ON stored.task_uuid = i.task_uuid AND stored.image_uuid = i.image_uuid
LEFT JOIN counted ON counted.id = locked.id
LEFT JOIN logged ON logged.job_id = counted.id
ORDER BY i.position
"""  # noqa: S608 -- only our own state names and queries are interpolated


_MANY = """
  SELECT * FROM unnest(
    CAST(:task_uuids AS VARCHAR[]), CAST(:image_uuids AS VARCHAR[]),
    CAST(:image_urls AS TEXT[]), CAST(:image_datas AS TEXT[]), CAST(:seeds AS BIGINT[]),
    CAST(:costs AS BIGINT[]), CAST(:nsfws AS BOOLEAN[])
  ) WITH ORDINALITY
    AS i(task_uuid, image_uuid, image_url, image_data, seed, cost_micros, nsfw, position)
"""
# One result, as plain values: PostgreSQL plans a statement over arrays again for every
# call (their length changes its estimates), and this one once per connection, and most
# batches of a calm farm are a single webhook.
_ONE = """
  SELECT CAST(:task_uuids AS VARCHAR) AS task_uuid, CAST(:image_uuids AS VARCHAR) AS image_uuid,
    CAST(:image_urls AS TEXT) AS image_url, CAST(:image_datas AS TEXT) AS image_data,
    CAST(:seeds AS BIGINT) AS seed, CAST(:costs AS BIGINT) AS cost_micros,
    CAST(:nsfws AS BOOLEAN) AS nsfw, 1 AS position
"""


def _record_statement(incoming: str, typed: Callable[[TypeEngine[Any]], TypeEngine[Any]]) -> Any:
    """The statement over `incoming`, the results' parameters typed by `typed`."""
    return (
        text(_record_results_sql(incoming))
        .bindparams(
            bindparam("task_uuids", type_=typed(String())),
            bindparam("image_uuids", type_=typed(String())),
            bindparam("image_urls", type_=typed(Text())),
            bindparam("image_datas", type_=typed(Text())),
            bindparam("seeds", type_=typed(BigInteger())),
            bindparam("costs", type_=typed(BigInteger())),
            bindparam("nsfws", type_=typed(Boolean())),
            bindparam("source", type_=results.c.source.type),
            bindparam("received_at", type_=results.c.received_at.type),
        )
        .columns(
            job_id=jobs.c.id.type,
            prior_state=jobs.c.state.type,
            late=results.c.late.type,
            completed=Boolean(),
            **{column.name: column.type for column in jobs.c},
        )
    )


RECORD_RESULTS = _record_statement(_MANY, ARRAY)
RECORD_ONE_RESULT = _record_statement(_ONE, lambda scalar: scalar)

# The steps elsewhere, in the caller's transaction. The job's row lock comes first: without
# it concurrent results each read `submitted` and each log "completed".
# (SQLite locks the whole file for the transaction: it has no FOR UPDATE, and needs none)
LOCK_JOB_OF_TASK = (
    select(jobs.c.id, jobs.c.state)
    .where(jobs.c.task_uuid == bindparam("task_uuid", type_=jobs.c.task_uuid.type))
    .with_for_update()
)
# Written out because SQLAlchemy (2.0) cannot cache its ON CONFLICT constructs: built with
# insert().on_conflict_do_nothing(), it was compiled again for every result.
INSERT_RESULT = (
    text(
        "INSERT INTO results (task_uuid, image_uuid, job_id, image_url, image_data, seed,"
        " cost_micros, nsfw, source, late, received_at)"
        " VALUES (:task_uuid, :image_uuid, :job_id, :image_url, :image_data, :seed,"
        " :cost_micros, :nsfw, :source, :late, :received_at)"
        " ON CONFLICT (task_uuid, image_uuid) DO NOTHING RETURNING image_uuid"
    )
    .bindparams(*(bindparam(column.name, type_=column.type) for column in results.c))
    .columns(results.c.image_uuid)
)
_RECEIVED = jobs.c.images_received + 1
_COMPLETES = jobs.c.state.in_([s.value for s in IN_FLIGHT_STATES]) & (
    jobs.c.number_results <= _RECEIVED
)
_NOW = bindparam("received_at", type_=jobs.c.updated_at.type)
# one more result for job_id, costing `cost` micro-dollars; succeeded if it was the last
COUNT_RESULT = (
    update(jobs)
    .where(jobs.c.id == bindparam("job_id", type_=jobs.c.id.type))
    .values(
        images_received=_RECEIVED,
        cost_micros=jobs.c.cost_micros + bindparam("cost", type_=jobs.c.cost_micros.type),
        state=case((_COMPLETES, JobState.SUCCEEDED.value), else_=jobs.c.state),
        finished_at=case((_COMPLETES, _NOW), else_=jobs.c.finished_at),
        updated_at=_NOW,
    )
    .returning(*jobs.c)
)


@dataclass(frozen=True)
class Recorded:
    """What recording one result did, the job its task belongs to (None: no job has it),
    and the job's completion if it was the last image."""

    outcome: ResultOutcome
    job_id: str | None = None
    completion: Transition | None = None


def record_results(
    conn: Connection, incoming: Sequence[IncomingResult], source: str, received_at: datetime
) -> list[Recorded]:
    """Store each result once, count it against its job and complete the job with its
    last image; one Recorded per result, in order. A result for a job that was terminal
    before the batch is stored as late and its cost counted (Runware bills it), and the
    job stays as it is; results of one batch are all on time or all late for their job.

    A result repeated within `incoming` is recorded at its first place and is a
    DUPLICATE at the others (UNKNOWN_TASK if its task is unknown).
    """
    distinct: dict[tuple[str, str], IncomingResult] = {}
    for result in incoming:
        distinct.setdefault((result.task_uuid, result.image_uuid), result)
    if conn.dialect.name == "postgresql":
        steps = _in_one_statement(conn, list(distinct.values()), source, received_at)
    else:
        before_batch: dict[str, str] = {}
        steps = [_in_steps(conn, r, source, received_at, before_batch) for r in distinct.values()]
    recorded = dict(zip(distinct, (_recorded(*step) for step in steps), strict=True))
    found = []
    answered: set[tuple[str, str]] = set()
    for result in incoming:
        key = (result.task_uuid, result.image_uuid)
        own = recorded[key]
        if key in answered:
            unknown = own.outcome is ResultOutcome.UNKNOWN_TASK
            repeated = ResultOutcome.UNKNOWN_TASK if unknown else ResultOutcome.DUPLICATE
            own = Recorded(repeated, own.job_id)
        answered.add(key)
        found.append(own)
    return found


# what recording one result found: the job's id and state before (None: no job has the
# task), whether the result was late (None: a duplicate), and the job's row if it completed it
_Step = tuple[str | None, str | None, bool | None, Row[Any] | None]


def _in_one_statement(
    conn: Connection, distinct: Sequence[IncomingResult], source: str, received_at: datetime
) -> list[_Step]:
    columns: dict[str, list[Any]] = {
        "task_uuids": [r.task_uuid for r in distinct],
        "image_uuids": [r.image_uuid for r in distinct],
        "image_urls": [r.image_url for r in distinct],
        "image_datas": [r.image_data for r in distinct],
        "seeds": [r.seed for r in distinct],
        "costs": [to_micros(r.cost_usd) for r in distinct],
        "nsfws": [r.nsfw for r in distinct],
    }
    values: dict[str, Any] = columns
    statement = RECORD_RESULTS
    if len(distinct) == 1:
        statement, values = RECORD_ONE_RESULT, {k: v[0] for k, v in columns.items()}
    params = values | {"source": source, "received_at": received_at}
    rows = conn.execute(statement, params).all()
    # every row of a completed job carries the completion: it belongs to the job's last
    # result in the batch, the one that would have completed it had they come one by one
    last_of_job = {row.id: place for place, row in enumerate(rows) if row.completed}
    return [
        (row.job_id, row.prior_state, row.late, row if last_of_job.get(row.id) == place else None)
        for place, row in enumerate(rows)
    ]


def _in_steps(
    conn: Connection,
    result: IncomingResult,
    source: str,
    received_at: datetime,
    before_batch: dict[str, str],
) -> _Step:
    """One result's steps; `before_batch` keeps each job's state as the batch found it,
    which decides lateness for all of the batch's results, as in the one statement."""
    job = conn.execute(LOCK_JOB_OF_TASK, {"task_uuid": result.task_uuid}).first()
    if job is None:
        return None, None, None, None
    prior = before_batch.setdefault(job.id, job.state)
    late = JobState(prior) in TERMINAL_STATES
    cost = to_micros(result.cost_usd)
    stored = conn.execute(
        INSERT_RESULT,
        {
            "task_uuid": result.task_uuid,
            "image_uuid": result.image_uuid,
            "job_id": job.id,
            "image_url": result.image_url,
            "image_data": result.image_data,
            "seed": result.seed,
            "cost_micros": cost,
            "nsfw": result.nsfw,
            "source": source,
            "late": late,
            "received_at": received_at,
        },
    ).first()
    if stored is None:
        return job.id, prior, None, None
    counted = {"job_id": job.id, "cost": cost or 0, "received_at": received_at}
    row = conn.execute(COUNT_RESULT, counted).one()
    completed = row.state == JobState.SUCCEEDED.value and job.state != row.state
    if late or not completed:
        return job.id, prior, late, None
    detail = {"images": row.images_received, "source": source}
    event = event_params("completed", JobState(job.state), JobState.SUCCEEDED, detail, received_at)
    conn.execute(INSERT_EVENT, {"event_job_id": job.id} | event)
    return job.id, prior, late, row


def _recorded(
    job_id: str | None, prior: str | None, late: bool | None, completed: Row[Any] | None
) -> Recorded:
    if prior is None:
        return Recorded(ResultOutcome.UNKNOWN_TASK)
    if late is None:
        return Recorded(ResultOutcome.DUPLICATE, job_id)
    outcome = ResultOutcome.LATE if late else ResultOutcome.ACCEPTED
    if completed is None:
        return Recorded(outcome, job_id)
    job = job_from_row(completed, [], [])
    return Recorded(outcome, job_id, Transition(job, JobState(prior), JobState.SUCCEEDED))
