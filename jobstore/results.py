"""Recording Runware's results: each stored once by (taskUUID, imageUUID) and counted
against its job. The job's last image does not complete it: the job succeeds when the
last of its images is stored (jobstore.settling). How a batch is written is the dialect's
(jobstore/dialects); what each result did is decided here, once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from farmdomain.values import IncomingResult, ResultOutcome
from jobstore import dialects


@dataclass(frozen=True)
class Recorded:
    """What recording one result did, and the job its task belongs to (None: no job has
    it)."""

    outcome: ResultOutcome
    job_id: str | None = None


def record_results(
    conn: Connection, incoming: Sequence[IncomingResult], source: str, received_at: datetime
) -> list[Recorded]:
    """Store each result once and count it against its job; one Recorded per result, in
    order. A job takes at most numberResults
    images (more are TOO_MANY_IMAGES: neither stored nor counted); a new one for a job
    terminal before the batch (canceled, failed) is LATE: stored and counted with its
    cost, since Runware bills it, and the job's state does not change.

    A result repeated within `incoming` is recorded at its first place and is a
    DUPLICATE at the others (UNKNOWN_TASK if its task is unknown).
    """
    distinct: dict[tuple[str, str], IncomingResult] = {}
    for result in incoming:
        distinct.setdefault((result.task_uuid, result.image_uuid), result)
    steps = dialects.of(conn).record_distinct(conn, list(distinct.values()), source, received_at)
    recorded = {
        key: Recorded(outcome, job_id)
        for key, (job_id, outcome) in zip(distinct, steps, strict=True)
    }
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
