"""What a database the store runs on must do: the statements that differ between
PostgreSQL and SQLite, each written once per dialect."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection, Engine, Row, Table

from farmdomain.values import IncomingResult

# What recording one result found: the job's id and state before (None: no job has the
# task), whether the result was late (None: a duplicate), and the job's row if the result
# completed it.
Step = tuple[str | None, str | None, bool | None, Row[Any] | None]


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
        """Store each of `distinct` (no two with one (task, image)) once, count it against
        its job and complete the job with its last image; one Step per result, in order.

        Lateness is decided by the job's state before the batch, for all of its results."""
        ...

    def insert(self, table: Table) -> Any:
        """An INSERT of `table` that can take ON CONFLICT DO UPDATE / DO NOTHING."""
        ...

    def utc_day(self, column: ColumnElement[datetime]) -> ColumnElement[str]:
        """The UTC date of the timestamp `column`, as YYYY-MM-DD."""
        ...
