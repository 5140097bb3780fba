"""Creating jobs: the row of a new queued job, its `created` event, and the idempotency
check that a repeated key carries the same request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row

from farmdomain.admission import DEFAULT_PRIORITY, ranked_at
from farmdomain.errors import IdempotencyConflict
from farmdomain.jobs import JobState
from farmdomain.pricing import estimate_usd
from farmdomain.values import request_fingerprint, to_micros
from jobstore.event_log import event_params


@dataclass(frozen=True)
class NewJob:
    """A job to create: its Runware parameters and what identifies it."""

    params: dict[str, Any]
    idempotency_key: str | None = None
    # the request's identity for idempotency (GenerationRequest.fingerprint); without one,
    # the parameters are hashed as given
    fingerprint: str | None = None
    retry_of: str | None = None
    # creation -> terminal for this job; without it, the one create_jobs is given
    deadline_s: float | None = None
    # where the job's terminal event is POSTed, checked by farmdomain.callbacks.url_issues
    callback_url: str | None = None
    # inside its tenant, a higher priority is admitted first (farmdomain.admission)
    priority: int = DEFAULT_PRIORITY


def job_row(
    new: NewJob, tenant: str, deadline_s: float, now: datetime, aging_s: float
) -> dict[str, Any]:
    """The row of a queued job, keyed by column, with an id and a taskUUID of its own;
    `aging_s` is what one step of priority is worth in waiting (farmdomain.admission)."""
    return {
        "id": str(uuid.uuid4()),
        "task_uuid": str(uuid.uuid4()),
        "tenant": tenant,
        "idempotency_key": new.idempotency_key,
        "request_hash": new.fingerprint or request_fingerprint(new.params),
        "state": JobState.QUEUED.value,
        "request": new.params,
        "number_results": int(new.params.get("numberResults", 1)),
        "images_received": 0,
        "cost_micros": 0,
        "estimate_micros": to_micros(estimate_usd(new.params)),
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
        "deadline_at": now + timedelta(seconds=new.deadline_s or deadline_s),
        "retry_of": new.retry_of,
        "callback_url": new.callback_url,
        "priority": new.priority,
        "ranked_at": ranked_at(now, new.priority, aging_s),
    }


def created_event(at: datetime) -> dict[str, Any]:
    return event_params("created", None, JobState.QUEUED, {}, at)


def same_request(row: dict[str, Any], existing: Row[Any]) -> None:
    """IdempotencyConflict unless the job `row`'s key already names has `row`'s request."""
    if existing.request_hash != row["request_hash"]:
        raise IdempotencyConflict(row["idempotency_key"], existing.id)
