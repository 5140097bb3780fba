"""The job: its states, the transitions between them and its read-only view."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})
# Runware may be working on the job: results can arrive and complete it
IN_FLIGHT_STATES = (JobState.SUBMITTING, JobState.SUBMITTED)

# The edges of ARCHITECTURE.md's state diagram. A webhook may beat the worker's
# "submitted" write, so results can complete a job that is still `submitting`.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.SUBMITTING, JobState.CANCELED, JobState.FAILED}),
    JobState.SUBMITTING: frozenset(
        {JobState.SUBMITTED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED}
    ),
    JobState.SUBMITTED: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELED: frozenset(),
}


def sources_of(target: JobState) -> frozenset[JobState]:
    """The states from which `target` may be reached: the WHERE of a compare-and-set."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


class FailureReason(StrEnum):
    """Why a job failed: a small fixed set that metrics and alerts key on."""

    VALIDATION = "validation"
    AUTH = "auth"
    QUOTA = "quota"
    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    PROVIDER = "provider"
    SAFETY = "safety"
    SERVER = "server"
    NOT_FOUND = "not_found"
    LOST = "lost"
    # an image Runware delivered could not be kept in the results store (refused, or not
    # stored by the job's deadline)
    STORAGE = "storage"


@dataclass(frozen=True)
class ImageResult:
    """One generated image as Runware reported it."""

    image_uuid: str
    image_url: str | None
    seed: int | None
    cost_usd: Decimal | None
    nsfw: bool | None
    source: str
    late: bool
    received_at: datetime
    has_inline_data: bool = False
    # the farm's copy in the results store, once kept (jobstore.copies)
    storage_key: str | None = None
    sha256: str | None = None
    stored_bytes: int | None = None
    # when retention deleted the kept copy; None while it is kept (or was never)
    deleted_at: datetime | None = None


@dataclass(frozen=True)
class JobEvent:
    """One recorded transition or attempt in a job's life."""

    at: datetime
    kind: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class Job:
    """A job as the store holds it."""

    id: str
    task_uuid: str
    tenant: str
    state: JobState
    request: dict[str, Any]
    number_results: int
    images_received: int
    cost_usd: Decimal
    attempts: int
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime
    claimed_at: datetime | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    idempotency_key: str | None = None
    failure_reason: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    failure_parameter: str | None = None
    retry_of: str | None = None
    # where the terminal event is POSTed (farmdomain.callbacks); None: nowhere
    callback_url: str | None = None
    estimate_usd: Decimal = Decimal(0)
    # inside its tenant, a higher priority is admitted first (farmdomain.admission)
    priority: int = 0
    images: list[ImageResult] = field(default_factory=list)
    events: list[JobEvent] = field(default_factory=list)
