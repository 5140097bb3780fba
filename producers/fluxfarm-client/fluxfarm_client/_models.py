"""Typed models of what the farm answers: a job, its images and events, a page of jobs,
a callback event and a callback's delivery attempts.

Parsing is lenient about what it does not know (a newer farm may add fields) and strict
about what it does: a missing or mistyped known field raises ValueError.
"""

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
        """Terminal states never change again."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 time, got {value!r}")
    return datetime.fromisoformat(value)


def _optional_time(value: Any) -> datetime | None:
    return None if value is None else _time(value)


def _usd(value: Any) -> Decimal | None:
    # the farm sends dollars as decimal text, so that nothing is rounded on the way
    return None if value is None else Decimal(str(value))


@dataclass(frozen=True)
class Failure:
    """Why a job failed."""

    reason: str
    code: str | None
    message: str | None
    parameter: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Failure:
        return cls(data["reason"], data.get("code"), data.get("message"), data.get("parameter"))


@dataclass(frozen=True)
class Image:
    """One image of a job. `url` is the farm's durable copy where it keeps one, else
    `image_url` is the provider's; `sha256` and `size_bytes` come with a durable copy;
    `deleted_at` is when the farm's retention deleted it."""

    image_uuid: str
    image_url: str | None
    seed: int | None
    cost_usd: Decimal | None
    nsfw: bool | None
    source: str
    late: bool
    received_at: datetime
    has_inline_data: bool
    url: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    deleted_at: datetime | None = None

    @property
    def fetch_url(self) -> str | None:
        """Where `download` fetches this image from: the durable copy first."""
        return self.url or self.image_url

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Image:
        return cls(
            image_uuid=data["imageUUID"],
            image_url=data.get("imageURL"),
            seed=data.get("seed"),
            cost_usd=_usd(data.get("costUsd")),
            nsfw=data.get("nsfw"),
            source=data["source"],
            late=bool(data["late"]),
            received_at=_time(data["receivedAt"]),
            has_inline_data=bool(data.get("hasInlineData", False)),
            url=data.get("url"),
            sha256=data.get("sha256"),
            size_bytes=data.get("bytes"),
            deleted_at=_time(data["deletedAt"]) if data.get("deletedAt") else None,
        )


@dataclass(frozen=True)
class Event:
    """One recorded transition or attempt in a job's life."""

    at: datetime
    kind: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(
            _time(data["at"]),
            data["kind"],
            data.get("fromState"),
            data.get("toState"),
            dict(data.get("detail") or {}),
        )


@dataclass(frozen=True)
class Job:
    """A job as the farm shows it (GET /v1/jobs/{id})."""

    id: str
    state: JobState
    task_uuid: str
    tenant: str
    number_results: int
    images_received: int
    cost_usd: Decimal
    estimated_cost_usd: Decimal
    attempts: int
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime
    claimed_at: datetime | None
    submitted_at: datetime | None
    finished_at: datetime | None
    request: dict[str, Any]
    failure: Failure | None
    retry_of: str | None
    callback_url: str | None
    # inside its tenant, a higher priority is admitted first
    priority: int = 0
    images: list[Image] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any) -> Job:
        if not isinstance(data, dict):
            raise ValueError(f"expected a job object, got {type(data).__name__}")
        failure = data.get("failure")
        return cls(
            id=data["id"],
            state=JobState(data["state"]),
            task_uuid=data["taskUUID"],
            tenant=data["tenant"],
            number_results=int(data["numberResults"]),
            images_received=int(data["imagesReceived"]),
            cost_usd=_usd(data["costUsd"]) or Decimal(0),
            estimated_cost_usd=_usd(data.get("estimatedCostUsd")) or Decimal(0),
            attempts=int(data["attempts"]),
            created_at=_time(data["createdAt"]),
            updated_at=_time(data["updatedAt"]),
            deadline_at=_time(data["deadlineAt"]),
            claimed_at=_optional_time(data.get("claimedAt")),
            submitted_at=_optional_time(data.get("submittedAt")),
            finished_at=_optional_time(data.get("finishedAt")),
            request=dict(data["request"]),
            failure=None if failure is None else Failure.from_json(failure),
            retry_of=data.get("retryOf"),
            callback_url=data.get("callbackUrl"),
            priority=int(data.get("priority", 0)),
            images=[Image.from_json(image) for image in data.get("images", [])],
            events=[Event.from_json(event) for event in data.get("events", [])],
        )


@dataclass(frozen=True)
class JobPage:
    """One page of GET /v1/jobs: the jobs, newest first, and the cursor of the next page
    (None on the last)."""

    jobs: list[Job]
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: Any) -> JobPage:
        return cls([Job.from_json(job) for job in data["jobs"]], data.get("nextCursor"))


@dataclass(frozen=True)
class CallbackEvent:
    """A verified callback: `id` is its webhook-id, the same on every delivery attempt of
    one event (deduplicate on it); `type` is job.succeeded, job.failed or job.canceled."""

    id: str
    type: str
    timestamp: datetime
    job: Job


@dataclass(frozen=True)
class CallbackAttempt:
    """One delivery attempt of a callback: when, the answer's status (None: no answer),
    how long it took, and the first bytes of the answer or the error."""

    at: datetime
    status_code: int | None
    latency_ms: float
    answer: str
    error: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallbackAttempt:
        return cls(
            _time(data["at"]),
            data.get("statusCode"),
            float(data["latencyMs"]),
            data.get("answer", ""),
            data.get("error"),
        )


@dataclass(frozen=True)
class Callback:
    """A job's callback event and how its delivery stands: pending, delivered, dead
    (every attempt failed) or gone (the endpoint answered 410)."""

    id: str
    type: str
    url: str
    status: str
    created_at: datetime
    delivered_at: datetime | None
    attempts: list[CallbackAttempt]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Callback:
        return cls(
            id=data["id"],
            type=data["type"],
            url=data["url"],
            status=data["status"],
            created_at=_time(data["createdAt"]),
            delivered_at=_optional_time(data.get("deliveredAt")),
            attempts=[CallbackAttempt.from_json(a) for a in data.get("attempts", [])],
        )
