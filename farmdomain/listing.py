"""Listing a tenant's jobs: the filters, the page's bounds, and the cursor that names a
position in the newest-first order (created_at, then id, both descending).

A page starts after a position, not at an offset: jobs created meanwhile sort before the
first page and never shift a later one, so paging neither repeats nor skips a job.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from farmdomain.errors import FieldIssue, RequestInvalid
from farmdomain.jobs import Job, JobState
from farmdomain.text import has_control

LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 500
# a job id is a UUID; anything longer in a cursor was not made by us
_JOB_ID_MAX = 36


@dataclass(frozen=True)
class Position:
    """A job's place in the listing order."""

    created_at: datetime
    job_id: str


@dataclass(frozen=True)
class JobQuery:
    """Which of a tenant's jobs to list: any of `states` (none: every state), created
    strictly between `created_after` and `created_before`, under `idempotency_key`; at most
    `limit` of them, starting after `after`."""

    states: tuple[JobState, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    idempotency_key: str | None = None
    limit: int = LIST_LIMIT_DEFAULT
    after: Position | None = None


@dataclass(frozen=True)
class JobPage:
    """A page of jobs, newest first, and the position the next page starts after (None:
    this page is the last)."""

    jobs: list[Job]
    next: Position | None = None


def query_issues(query: JobQuery) -> list[FieldIssue]:
    """Why `query` cannot be run, named by the API's field names; [] if it can."""
    issues = []
    if not 1 <= query.limit <= LIST_LIMIT_MAX:
        issues.append(FieldIssue("limit", "range", f"must be 1 to {LIST_LIMIT_MAX}"))
    for name, value in (
        ("createdAfter", query.created_after),
        ("createdBefore", query.created_before),
    ):
        if value is None:
            continue
        if value.utcoffset() is None:
            issues.append(FieldIssue(name, "timezone", "must carry a UTC offset"))
            continue
        try:
            value.astimezone(UTC)
        except OverflowError:
            issues.append(FieldIssue(name, "range", "must fall within years 1 to 9999 in UTC"))
    return issues


def cursor_of(position: Position) -> str:
    """The opaque text of `position`, as GET /v1/jobs hands it out."""
    packed = orjson.dumps([position.created_at.astimezone(UTC).isoformat(), position.job_id])
    return base64.urlsafe_b64encode(packed).decode().rstrip("=")


def position_of(cursor: str) -> Position:
    """The position a cursor of `cursor_of` names; RequestInvalid (field `cursor`) for
    any text it did not make."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, job_id = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        created_at = datetime.fromisoformat(at)
        if created_at.utcoffset() is None or not isinstance(job_id, str):
            raise ValueError("not a position")
        if not 0 < len(job_id) <= _JOB_ID_MAX or has_control(job_id):
            raise ValueError("not a job id")
        created_at = created_at.astimezone(UTC)
    except (ValueError, TypeError, OverflowError, UnicodeEncodeError, binascii.Error) as exc:
        message = "must be a nextCursor from an earlier page"
        raise RequestInvalid([FieldIssue("cursor", "cursor", message)]) from exc
    return Position(created_at, job_id)
