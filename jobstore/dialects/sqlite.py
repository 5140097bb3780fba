"""SQLite: a transition and its event are two statements in the caller's transaction, a
batch of results is recorded step by step, and every connection takes the write lock up
front (several processes write one file)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Table,
    bindparam,
    case,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite

from farmdomain.jobs import IN_FLIGHT_STATES, TERMINAL_STATES, JobState
from farmdomain.values import IncomingResult, ResultOutcome, to_micros
from jobstore.dialects.protocol import Step
from jobstore.event_log import INSERT_EVENT
from jobstore.schema import jobs, results


def _configure(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook issue BEGIN itself instead of pysqlite's deferred one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    # Several processes write one file: taking the write lock up front makes them queue on
    # busy_timeout instead of failing a deferred transaction's lock upgrade.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


# The steps, in the caller's transaction. The job's row lock comes first: without it
# concurrent results could each read room for one more image.
# (SQLite locks the whole file for the transaction: it has no FOR UPDATE, and needs none)
LOCK_JOB_OF_TASK = (
    select(jobs.c.id, jobs.c.state, jobs.c.number_results, jobs.c.images_received)
    .where(jobs.c.task_uuid == bindparam("task_uuid", type_=jobs.c.task_uuid.type))
    .with_for_update()
)
# Written out because SQLAlchemy (2.0) cannot cache its ON CONFLICT constructs: built with
# insert().on_conflict_do_nothing(), it was compiled again for every result.
INSERT_RESULT = (
    text(
        "INSERT INTO results (task_uuid, image_uuid, job_id, image_url, image_data, seed,"
        " cost_micros, unconfirmed_cost_micros, nsfw, source, late, received_at)"
        " VALUES (:task_uuid, :image_uuid, :job_id, :image_url, :image_data, :seed,"
        " :cost_micros, :unconfirmed_cost_micros, :nsfw, :source, :late, :received_at)"
        " ON CONFLICT (task_uuid, image_uuid) DO NOTHING RETURNING image_uuid"
    )
    .bindparams(*(bindparam(column.name, type_=column.type) for column in results.c))
    .columns(results.c.image_uuid)
)
RESULT_EXISTS = select(results.c.image_uuid).where(
    results.c.task_uuid == bindparam("task_uuid", type_=results.c.task_uuid.type),
    results.c.image_uuid == bindparam("image_uuid", type_=results.c.image_uuid.type),
)
_RECEIVED = jobs.c.images_received + 1
_COMPLETES = jobs.c.state.in_([s.value for s in IN_FLIGHT_STATES]) & (
    jobs.c.number_results <= _RECEIVED
)
_NOW = bindparam("received_at", type_=jobs.c.updated_at.type)
# one more result for job_id, costing `cost` micro-dollars; the last one gives back the
# job's admission unit (the trigger of 0013_durable_results): the job succeeds once every
# image is stored (jobstore.settling)
COUNT_RESULT = (
    update(jobs)
    .where(jobs.c.id == bindparam("job_id", type_=jobs.c.id.type))
    .values(
        images_received=_RECEIVED,
        cost_micros=jobs.c.cost_micros + bindparam("cost", type_=jobs.c.cost_micros.type),
        capacity_key=case((_COMPLETES, None), else_=jobs.c.capacity_key),
        updated_at=_NOW,
    )
)


def _in_steps(
    conn: Connection,
    result: IncomingResult,
    source: str,
    received_at: datetime,
    before_batch: dict[str, str],
) -> Step:
    """One result's steps; `before_batch` keeps each job's state as the batch found it,
    which decides whether a new image is late for all of the batch's results, as
    PostgreSQL's one statement does; the count of images is the row's, as it stands."""
    job = conn.execute(LOCK_JOB_OF_TASK, {"task_uuid": result.task_uuid}).first()
    if job is None:
        return None, ResultOutcome.UNKNOWN_TASK
    prior = before_batch.setdefault(job.id, job.state)
    late = JobState(prior) in TERMINAL_STATES
    if job.images_received >= job.number_results:
        # no new image is taken: only whether this one is known decides the outcome
        key = {"task_uuid": result.task_uuid, "image_uuid": result.image_uuid}
        if conn.execute(RESULT_EXISTS, key).first() is not None:
            return job.id, ResultOutcome.DUPLICATE
        return job.id, ResultOutcome.TOO_MANY_IMAGES
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
            "unconfirmed_cost_micros": to_micros(result.unconfirmed_cost_usd),
            "nsfw": result.nsfw,
            "source": source,
            "late": late,
            "received_at": received_at,
        },
    ).first()
    if stored is None:
        return job.id, ResultOutcome.DUPLICATE
    counted = {"job_id": job.id, "cost": cost or 0, "received_at": received_at}
    conn.execute(COUNT_RESULT, counted)
    return job.id, ResultOutcome.LATE if late else ResultOutcome.ACCEPTED


class SQLite:
    name = "sqlite"
    logs_in_one_statement = False

    def make_engine(self, url: str, pool_size: int) -> Engine:
        """One file shared by threads and processes; its directory made if missing."""
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _configure)
        event.listen(engine, "begin", _begin_immediate)
        return engine

    def execute_with_events(
        self, conn: Connection, statement: Any, params: dict[str, Any]
    ) -> list[Row[Any]]:
        rows = list(conn.execute(statement, params).all())
        if rows:
            conn.execute(INSERT_EVENT, [{**params, "event_job_id": row.id} for row in rows])
        return rows

    def record_distinct(
        self,
        conn: Connection,
        distinct: Sequence[IncomingResult],
        source: str,
        received_at: datetime,
    ) -> list[Step]:
        before_batch: dict[str, str] = {}
        return [_in_steps(conn, r, source, received_at, before_batch) for r in distinct]

    def insert(self, table: Table) -> Any:
        return sqlite.insert(table)

    def utc_day(self, column: ColumnElement[datetime]) -> ColumnElement[str]:
        # the UTC timestamp is kept as ISO text
        return func.substr(column, 1, 10)


SQLITE = SQLite()
