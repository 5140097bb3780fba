"""The events table's rows as the transitions write them: one per change, in the same
transaction (or statement) as the change itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, Connection, insert

from farmdomain.jobs import JobState
from jobstore.schema import events

EVENT_FIELDS = ("at", "kind", "from_state", "to_state", "detail")


def event_params(
    kind: str,
    from_state: JobState | None,
    to_state: JobState | None,
    detail: dict[str, Any],
    at: datetime,
) -> dict[str, Any]:
    """The parameters of the event a logged statement records."""
    return {
        "event_at": at,
        "event_kind": kind,
        "event_from_state": from_state.value if from_state else None,
        "event_to_state": to_state.value if to_state else None,
        "event_detail": detail,
    }


def event_value(name: str) -> BindParameter[Any]:
    """The bind parameter of the event's field `name`, as `event_params` names it."""
    return BindParameter(f"event_{name}", type_=events.c[name].type)


INSERT_EVENT = insert(events).values(
    job_id=BindParameter("event_job_id", type_=events.c.job_id.type),
    **{name: event_value(name) for name in EVENT_FIELDS},
)


def log_event(
    conn: Connection,
    job_id: str,
    kind: str,
    states: tuple[JobState | None, JobState | None],
    detail: dict[str, Any],
    at: datetime,
) -> None:
    """Record one event of `job_id`, (from, to) `states`, in the caller's transaction."""
    conn.execute(INSERT_EVENT, {"event_job_id": job_id} | event_params(kind, *states, detail, at))
