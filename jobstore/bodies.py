"""Applying parsed Runware bodies to the store: results once each, error items fail their job."""

from __future__ import annotations

from collections.abc import Sequence

from farmdomain.values import BodyRecorded, Failure, ParsedBody, ResultError, ResultOutcome
from jobstore.protocol import Store
from jobstore.results import Recorded


def record(store: Store, parsed: ParsedBody, source: str) -> BodyRecorded:
    """Apply a parsed body to the store: results once each, error items fail their job."""
    [recorded] = record_many(store, [parsed], source)
    return recorded


def record_many(store: Store, bodies: Sequence[ParsedBody], source: str) -> list[BodyRecorded]:
    """`record` for several bodies: all their results in one store call, then their error
    items; what each body did."""
    incoming = [result for body in bodies for result in body.results]
    recorded = iter(store.record_results(incoming, source))
    found = []
    for body in bodies:
        own = [next(recorded) for _ in body.results]
        own += [_record_error(store, error) for error in body.errors]
        job_id = next((r.job_id for r in own if r.job_id is not None), None)
        found.append(BodyRecorded([r.outcome for r in own], job_id))
    return found


def _record_error(store: Store, error: ResultError) -> Recorded:
    job_id = store.job_id_for_task(error.task_uuid)
    if job_id is None:
        return Recorded(ResultOutcome.UNKNOWN_TASK)
    failure = Failure(
        reason=error.reason,
        message=error.message,
        code=error.code,
        parameter=error.parameter,
    )
    failed = store.fail(job_id, failure)
    return Recorded(ResultOutcome.ACCEPTED if failed else ResultOutcome.LATE, job_id)
