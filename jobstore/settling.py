"""A job's terminal transition once its images are settled, made by the copy that settles
the last one, in that copy's own transaction: `succeeded` when every image is stored,
`failed` (storage) when each is stored or given up on and some were given up on. And the
reason given for a job whose images are not all stored by its deadline.

The copy locks its job's row before writing its copy row: two copies of one job's last
images finishing at once take turns, and the second counts the first's image, so exactly
one of them moves the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, select

from farmdomain.jobs import IN_FLIGHT_STATES, FailureReason, JobState
from farmdomain.values import Transition
from jobstore.event_log import event_params
from jobstore.schema import jobs, result_copies, results
from jobstore.statements import execute_with_event, job_from_row, transition_statement

# the images a failure message names one by one; the others are counted
_NAMED = 5
_FINISHED = ("finished_at", "failure_reason", "failure_message")


@dataclass(frozen=True)
class ImageCopy:
    """One image of a job, as far as its copy went."""

    image_uuid: str
    stored: bool
    given_up: bool
    failure_reason: str | None


def lock_job(conn: Connection, job_id: str) -> None:
    """Hold the job's row until the caller's transaction ends (SQLite's transaction holds
    the whole file already)."""
    conn.execute(select(jobs.c.id).where(jobs.c.id == job_id).with_for_update())


def copies_of(conn: Connection, job_id: str) -> list[ImageCopy]:
    """The job's images (late ones aside: they came after it was terminal), in the order
    they arrived, with their copies."""
    kept = result_copies.c
    rows = conn.execute(
        select(results.c.image_uuid, kept.stored_at, kept.given_up_at, kept.failure_reason)
        .outerjoin(
            result_copies,
            and_(kept.task_uuid == results.c.task_uuid, kept.image_uuid == results.c.image_uuid),
        )
        .where(results.c.job_id == job_id, results.c.late.is_(False))
        .order_by(results.c.received_at, results.c.image_uuid)
    ).all()
    return [
        ImageCopy(
            row.image_uuid,
            row.stored_at is not None,
            row.given_up_at is not None,
            row.failure_reason,
        )
        for row in rows
    ]


def not_stored(copies: list[ImageCopy], number_results: int) -> str | None:
    """ "2 of 4 images not stored: <image>: <why>, ..." for the images not stored; None if
    every one of the job's `number_results` is."""
    missing = [copy for copy in copies if not copy.stored]
    unreceived = max(0, number_results - len(copies))
    if not missing and not unreceived:
        return None
    reasons = [
        f"{copy.image_uuid}: {copy.failure_reason or 'not tried yet'}"
        + ("" if copy.given_up else ", still retrying")
        for copy in missing[:_NAMED]
    ]
    if len(missing) > _NAMED:
        reasons.append(f"{len(missing) - _NAMED} more")
    if unreceived:
        reasons.append(f"{unreceived} never received")
    count = len(missing) + unreceived
    return f"{count} of {number_results} images not stored: {'; '.join(reasons)}"


def settle(conn: Connection, job_id: str, now: datetime) -> Transition | None:
    """Make the job terminal if its images are all settled; the transition, if any. The
    caller holds the job's row (lock_job) and has written its copy row."""
    job = conn.execute(
        select(jobs.c.state, jobs.c.number_results, jobs.c.images_received).where(
            jobs.c.id == job_id
        )
    ).first()
    if job is None or JobState(job.state) not in IN_FLIGHT_STATES:
        return None
    if job.images_received < job.number_results:
        return None
    copies = copies_of(conn, job_id)
    if any(not (copy.stored or copy.given_up) for copy in copies):
        return None
    message = not_stored(copies, job.number_results)
    if message is None:
        target, kind, reason = JobState.SUCCEEDED, "completed", None
        detail: dict[str, Any] = {"images": len(copies)}
    else:
        target, kind, reason = JobState.FAILED, "failed", FailureReason.STORAGE.value
        detail = {"reason": reason, "code": None, "message": message}
    values = {"finished_at": now, "failure_reason": reason, "failure_message": message}
    before = JobState(job.state)
    row = execute_with_event(
        conn,
        transition_statement(before.value, target.value, _FINISHED),
        {"job_ids": [job_id], "now": now}
        | {f"set_{name}": value for name, value in values.items()}
        | event_params(kind, before, target, detail, now),
    )
    return None if row is None else Transition(job_from_row(row, [], []), before, target)
