"""PostgreSQL: a transition and its event are one statement (the event reads the changed
row from a CTE), a batch of results is one statement, and pooled connections are pinged
only after sitting idle."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Connection,
    Engine,
    Row,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy import Dialect as SQLDialect
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.types import TypeEngine

from farmdomain.jobs import IN_FLIGHT_STATES, TERMINAL_STATES
from farmdomain.values import IncomingResult, ResultOutcome, to_micros
from jobstore.dialects.protocol import Step
from jobstore.event_log import EVENT_FIELDS, event_value
from jobstore.schema import events, jobs, results

# A connection back in use within this long was alive a moment ago: pinging it (what
# pool_pre_ping does on every checkout) would cost a round trip per transaction, 4 per job.
# One that sat idle longer, e.g. across a database restart, is pinged before use.
PING_AFTER_IDLE_S = 1.0
# libpq's connection parameters unless the URL's query names them. Without them a store cut
# off by the network holds a statement (or a ping) for as long as the kernel retransmits,
# about 15 minutes, and an idle connection to a vanished server is never found dead: with
# them a connection fails within about 30 s of its last answer, and the pool opens another.
CONNECTION_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    # milliseconds that sent data may stay unacknowledged
    "tcp_user_timeout": "30000",
}


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _make_ping_if_idle(dialect: SQLDialect) -> Any:
    def ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_s = time.monotonic() - record.info.get("checked_in_at", float("-inf"))
        if idle_s <= PING_AFTER_IDLE_S:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            # the pool drops this connection and checks out (or opens) another
            raise DisconnectionError("pooled connection failed its ping") from exc

    return ping_if_idle


@functools.cache
def _with_event(statement: Any) -> Any:
    """`statement` and the INSERT of its event as one statement: the event reads the
    changed row from a CTE."""
    changed = statement.cte("changed")
    values = [event_value(name).label(name) for name in EVENT_FIELDS]
    logged = (
        insert(events)
        .from_select(["job_id", *EVENT_FIELDS], select(changed.c.id, *values))
        .cte("logged")
    )
    return select(changed).add_cte(logged)


# Our own state names, written into the SQL once: bound as arrays they were dumped again
# for every result.
_TERMINAL = ", ".join(f"'{state.value}'" for state in sorted(TERMINAL_STATES))
_IN_FLIGHT = ", ".join(f"'{state.value}'" for state in IN_FLIGHT_STATES)


# PostgreSQL: every result of the batch in one autocommitted statement.
# `locked` takes the row locks of the batch's jobs in id order, so two batches sharing jobs
# wait for each other instead of deadlocking. The parts share one snapshot, taken before
# any wait for a lock, so a job is read only where a concurrent writer's commit shows: in
# `locked` (FOR UPDATE returns the row as that commit left it) and in the UPDATE (which
# re-reads the row it waited for). ON CONFLICT also sees that commit's result rows, so a
# duplicate stores, counts and logs nothing.
# A job takes new images only up to its numberResults: `ranked` numbers each job's new ones
# and `room` is read from the locked row, so racing batches never store more than that
# between them (a result the snapshot took for new, stored by the racing batch meanwhile,
# may take a place: the loser is refused, and delivered again). One that comes after the
# job is terminal (canceled, failed) is stored late, with its cost: Runware bills it.
# The job's last result does not complete it: it succeeds once every image is stored
# (jobstore.settling). Runware is done with it, though: its admission unit is given back
# here, by clearing capacity_key (the trigger of migration 0013_durable_results).
# One row per incoming result, in order: `job_id` (NULL: no job has the task) and what
# recording it did (a ResultOutcome).
def _record_results_sql(incoming: str) -> str:
    """The statement, the batch's results read by the query `incoming` (columns task_uuid,
    image_uuid, image_url, image_data, seed, cost_micros, unconfirmed_cost_micros, nsfw,
    position)."""
    return f"""
WITH incoming AS ({incoming}), locked AS (
  SELECT id, state, task_uuid, number_results, images_received FROM jobs
  WHERE task_uuid IN (SELECT task_uuid FROM incoming) ORDER BY id FOR UPDATE
), known AS (
  SELECT i.position FROM incoming i
  JOIN results r ON r.task_uuid = i.task_uuid AND r.image_uuid = i.image_uuid
), ranked AS (
  SELECT i.*, locked.id AS job_id, locked.state IN ({_TERMINAL}) AS late,
    row_number() OVER (PARTITION BY locked.id ORDER BY i.position) AS nth,
    locked.number_results - locked.images_received AS room
  FROM incoming i JOIN locked ON locked.task_uuid = i.task_uuid
  WHERE i.position NOT IN (SELECT position FROM known)
), stored AS (
  INSERT INTO results (task_uuid, image_uuid, job_id, image_url, image_data, seed,
    cost_micros, unconfirmed_cost_micros, nsfw, source, late, received_at)
  SELECT r.task_uuid, r.image_uuid, r.job_id, r.image_url, r.image_data, r.seed,
    r.cost_micros, r.unconfirmed_cost_micros, r.nsfw, CAST(:source AS VARCHAR), r.late,
    :received_at
  FROM ranked r WHERE r.nth <= r.room
  ON CONFLICT (task_uuid, image_uuid) DO NOTHING
  RETURNING task_uuid, image_uuid, job_id, cost_micros, late
), per_job AS (
  SELECT job_id, count(*) AS images, coalesce(sum(cost_micros), 0) AS cost
  FROM stored GROUP BY job_id
), counted AS (
  UPDATE jobs SET
    images_received = jobs.images_received + per_job.images,
    cost_micros = jobs.cost_micros + per_job.cost,
    capacity_key = CASE WHEN jobs.state IN ({_IN_FLIGHT})
      AND jobs.number_results <= jobs.images_received + per_job.images
      THEN NULL ELSE jobs.capacity_key END,
    updated_at = :received_at
  FROM per_job WHERE jobs.id = per_job.job_id
  RETURNING jobs.id
)
SELECT locked.id AS job_id,
  CASE WHEN locked.id IS NULL THEN '{ResultOutcome.UNKNOWN_TASK.value}'
    WHEN stored.late THEN '{ResultOutcome.LATE.value}'
    WHEN stored.image_uuid IS NOT NULL THEN '{ResultOutcome.ACCEPTED.value}'
    WHEN known.position IS NOT NULL THEN '{ResultOutcome.DUPLICATE.value}'
    WHEN ranked.nth > ranked.room THEN '{ResultOutcome.TOO_MANY_IMAGES.value}'
    WHEN ranked.position IS NOT NULL THEN '{ResultOutcome.DUPLICATE.value}'
    ELSE '{ResultOutcome.TOO_MANY_IMAGES.value}' END AS outcome
FROM incoming i
LEFT JOIN locked ON locked.task_uuid = i.task_uuid
LEFT JOIN known ON known.position = i.position
LEFT JOIN ranked ON ranked.position = i.position
LEFT JOIN stored ON stored.task_uuid = i.task_uuid AND stored.image_uuid = i.image_uuid
ORDER BY i.position
"""  # noqa: S608 -- only our own state names, outcomes and queries are interpolated


_MANY = """
  SELECT * FROM unnest(
    CAST(:task_uuids AS VARCHAR[]), CAST(:image_uuids AS VARCHAR[]),
    CAST(:image_urls AS TEXT[]), CAST(:image_datas AS TEXT[]), CAST(:seeds AS BIGINT[]),
    CAST(:costs AS BIGINT[]), CAST(:unconfirmed_costs AS BIGINT[]), CAST(:nsfws AS BOOLEAN[])
  ) WITH ORDINALITY
    AS i(task_uuid, image_uuid, image_url, image_data, seed, cost_micros,
      unconfirmed_cost_micros, nsfw, position)
"""
# One result, as plain values: PostgreSQL plans a statement over arrays again for every
# call (their length changes its estimates), and this one once per connection, and most
# batches of a calm farm are a single webhook.
_ONE = """
  SELECT CAST(:task_uuids AS VARCHAR) AS task_uuid, CAST(:image_uuids AS VARCHAR) AS image_uuid,
    CAST(:image_urls AS TEXT) AS image_url, CAST(:image_datas AS TEXT) AS image_data,
    CAST(:seeds AS BIGINT) AS seed, CAST(:costs AS BIGINT) AS cost_micros,
    CAST(:unconfirmed_costs AS BIGINT) AS unconfirmed_cost_micros,
    CAST(:nsfws AS BOOLEAN) AS nsfw, CAST(1 AS BIGINT) AS position
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
            bindparam("unconfirmed_costs", type_=typed(BigInteger())),
            bindparam("nsfws", type_=typed(Boolean())),
            bindparam("source", type_=results.c.source.type),
            bindparam("received_at", type_=results.c.received_at.type),
        )
        .columns(job_id=jobs.c.id.type, outcome=String())
    )


RECORD_RESULTS = _record_statement(_MANY, ARRAY)
RECORD_ONE_RESULT = _record_statement(_ONE, lambda scalar: scalar)


def _record_in_one_statement(
    conn: Connection, distinct: Sequence[IncomingResult], source: str, received_at: datetime
) -> list[Step]:
    """Every result of the batch in one autocommitted statement."""
    columns: dict[str, list[Any]] = {
        "task_uuids": [r.task_uuid for r in distinct],
        "image_uuids": [r.image_uuid for r in distinct],
        "image_urls": [r.image_url for r in distinct],
        "image_datas": [r.image_data for r in distinct],
        "seeds": [r.seed for r in distinct],
        "costs": [to_micros(r.cost_usd) for r in distinct],
        "unconfirmed_costs": [to_micros(r.unconfirmed_cost_usd) for r in distinct],
        "nsfws": [r.nsfw for r in distinct],
    }
    values: dict[str, Any] = columns
    statement = RECORD_RESULTS
    if len(distinct) == 1:
        statement, values = RECORD_ONE_RESULT, {k: v[0] for k, v in columns.items()}
    params = values | {"source": source, "received_at": received_at}
    rows = conn.execute(statement, params).all()
    return [(row.job_id, ResultOutcome(row.outcome)) for row in rows]


class PostgreSQL:
    name = "postgresql"
    logs_in_one_statement = True

    def make_engine(self, url: str, pool_size: int) -> Engine:
        """`pool_size` connections stay open. A burst beyond them opens up to as many more,
        each closed again when it is returned: a new backend per checkout costs PostgreSQL
        far more CPU than the statement it runs, so callers keep their own concurrency
        within `pool_size`. Connections carry CONNECTION_DEFAULTS, each unless the URL
        sets it (`?tcp_user_timeout=...`)."""
        named = make_url(url).query
        defaults = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in named}
        engine = create_engine(
            url, pool_size=pool_size, max_overflow=pool_size, connect_args=defaults
        )
        event.listen(engine.pool, "checkin", _note_checkin)
        event.listen(engine.pool, "checkout", _make_ping_if_idle(engine.dialect))
        return engine

    def execute_with_events(
        self, conn: Connection, statement: Any, params: dict[str, Any]
    ) -> list[Row[Any]]:
        return list(conn.execute(_with_event(statement), params).all())

    def record_distinct(
        self,
        conn: Connection,
        distinct: Sequence[IncomingResult],
        source: str,
        received_at: datetime,
    ) -> list[Step]:
        return _record_in_one_statement(conn, distinct, source, received_at)

    def insert(self, table: Table) -> Any:
        return postgresql.insert(table)

    def utc_day(self, column: ColumnElement[datetime]) -> ColumnElement[str]:
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")


POSTGRESQL = PostgreSQL()
