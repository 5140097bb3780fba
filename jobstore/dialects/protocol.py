"""What a database the store runs on must do: the statements that differ between
PostgreSQL and SQLite, each written once per dialect."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection, Engine, Row, Table

from farmdomain.values import IncomingResult, ResultOutcome

# What recording one result found: the job's id (None: no job has the task), and what
# recording it did.
Step = tuple[str | None, ResultOutcome]


class Dialect(Protocol):
    """A database the store runs on."""

    name: str
    # whether a statement that records its own event is a whole transition: autocommitted,
    # it then needs no BEGIN and COMMIT round trips
    logs_in_one_statement: bool

    def make_engine(self, url: str, pool_size: int) -> Engine:
        """An engine with the connection behaviour this database needs under concurrency."""
        ...

    def execute_with_events(
        self, conn: Connection, statement: Any, params: dict[str, Any]
    ) -> list[Row[Any]]:
        """Run `statement` (an INSERT or UPDATE of jobs RETURNING the rows, with `params`,
        the event's parameters included) and record the event of every job it touched."""
        ...

    def record_distinct(
        self,
        conn: Connection,
        distinct: Sequence[IncomingResult],
        source: str,
        received_at: datetime,
    ) -> list[Step]:
        """Store each of `distinct` (no two with one (task, image)) once and count it
        against its job, whose last image gives back its admission unit (capacity_key
        cleared); one Step per result, in order.

        A job takes new images only while in flight, as its state was before the batch, and
        never more than its numberResults: a new one for a terminal job is LATE, one past
        numberResults TOO_MANY_IMAGES, and neither is stored."""
        ...

    def insert(self, table: Table) -> Any:
        """An INSERT of `table` that can take ON CONFLICT DO UPDATE / DO NOTHING."""
        ...

    def utc_day(self, column: ColumnElement[datetime]) -> ColumnElement[str]:
        """The UTC date of the timestamp `column`, as YYYY-MM-DD."""
        ...
