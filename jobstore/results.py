"""Recording Runware's results: each stored once by (taskUUID, imageUUID), counted against
its job, and the job completed by its last image. How a batch is written is the dialect's
(jobstore/dialects); what each result did is decided here, once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row

from farmdomain.jobs import JobState
from farmdomain.values import IncomingResult, ResultOutcome, Transition
from jobstore import dialects
from jobstore.statements import job_from_row


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
    steps = dialects.of(conn).record_distinct(conn, list(distinct.values()), source, received_at)
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
