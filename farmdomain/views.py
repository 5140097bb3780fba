"""The JSON shapes producers show: a job as callers see it, and the error body."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from farmdomain.admission import PRIORITY_MAX, PRIORITY_MIN
from farmdomain.callbacks import Attempt, CallbackEvent, CallbackStatus
from farmdomain.errors import FieldIssue
from farmdomain.jobs import ImageResult, Job, JobEvent, JobState
from farmdomain.listing import JobPage, cursor_of

# a kept image's key -> a URL that fetches it for a while
UrlOf = Callable[[str], str]


def _usd(amount: Decimal) -> str:
    # fixed-point text: JSON numbers would round, and Decimal's str() may use exponents
    return format(amount, "f")


class _View(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True, frozen=True
    )


class FailureView(_View):
    """Why a job failed."""

    reason: str = Field(description="One of a small fixed set, e.g. provider, timeout, lost.")
    code: str | None = Field(description="Runware's error code, when it gave one.")
    message: str | None
    parameter: str | None = Field(description="The request parameter Runware objected to.")


class ImageView(_View):
    """One image Runware delivered for the job."""

    image_uuid: str = Field(alias="imageUUID")
    image_url: str | None = Field(alias="imageURL")
    seed: int | None
    cost_usd: str | None = Field(description="Exact decimal US dollars.")
    nsfw: bool | None
    source: str = Field(description="How the result arrived: webhook or poll.")
    late: bool = Field(description="Arrived after the job was already terminal.")
    received_at: datetime
    has_inline_data: bool = Field(
        description="The image came as base64 data, kept in the job store until it is copied."
    )
    stored: bool = Field(
        description="The image is kept in the farm's results store, verified. A job succeeds"
        " once every image is; until then it stays submitted."
    )
    sha256: str | None = Field(description="SHA-256 of the kept image; None until it is kept.")
    bytes: int | None = Field(description="Size of the kept image; None until it is kept.")
    url: str | None = Field(
        description="The farm's durable copy, by an expiring URL (presigned for object storage,"
        " signed and served by the farm for its directory); None until it is kept, and once"
        " it is deleted."
    )
    deleted: bool = Field(description="The kept copy was deleted by the tenant's retention.")
    deleted_at: datetime | None = Field(description="When retention deleted the kept copy.")

    @classmethod
    def from_image(cls, image: ImageResult, url_of: UrlOf | None = None) -> ImageView:
        deleted = image.deleted_at is not None
        kept = None if deleted else image.storage_key
        return cls(
            image_uuid=image.image_uuid,
            image_url=image.image_url,
            seed=image.seed,
            cost_usd=None if image.cost_usd is None else _usd(image.cost_usd),
            nsfw=image.nsfw,
            source=image.source,
            late=image.late,
            received_at=image.received_at,
            has_inline_data=image.has_inline_data,
            stored=kept is not None,
            sha256=image.sha256,
            bytes=image.stored_bytes,
            url=url_of(kept) if kept is not None and url_of is not None else None,
            deleted=deleted,
            deleted_at=image.deleted_at,
        )


class EventView(_View):
    """One recorded transition or attempt."""

    at: datetime
    kind: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any]

    @classmethod
    def from_event(cls, event: JobEvent) -> EventView:
        return cls(
            at=event.at,
            kind=event.kind,
            from_state=event.from_state,
            to_state=event.to_state,
            detail=event.detail,
        )


class JobView(_View):
    """A job: its state, what it asked Runware for, what came back and what it cost."""

    id: str
    state: JobState
    task_uuid: str = Field(alias="taskUUID")
    tenant: str
    number_results: int
    images_received: int
    cost_usd: str = Field(description="Exact decimal US dollars reported by Runware so far.")
    estimated_cost_usd: str = Field(
        description="What the job was expected to cost when queued (reserved against a budget)."
    )
    attempts: int = Field(description="Submit attempts made so far.")
    priority: int = Field(
        description=f"Inside its tenant, a higher priority is admitted first ({PRIORITY_MIN}"
        f" to {PRIORITY_MAX}); waiting raises it, so no job waits forever."
    )
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime
    claimed_at: datetime | None
    submitted_at: datetime | None
    finished_at: datetime | None
    request: dict[str, Any] = Field(description="The Runware parameters as stored.")
    failure: FailureView | None
    retry_of: str | None
    callback_url: str | None = Field(
        description="Where the job's terminal event is POSTed, signed (Standard Webhooks)."
    )
    images: list[ImageView]
    events: list[EventView]

    @classmethod
    def from_job(cls, job: Job, url_of: UrlOf | None = None) -> JobView:
        """The view of `job`; `url_of` turns a kept image's key into its durable URL."""
        failure = (
            None
            if job.failure_reason is None
            else FailureView(
                reason=job.failure_reason,
                code=job.failure_code,
                message=job.failure_message,
                parameter=job.failure_parameter,
            )
        )
        return cls(
            id=job.id,
            state=job.state,
            task_uuid=job.task_uuid,
            tenant=job.tenant,
            number_results=job.number_results,
            images_received=job.images_received,
            cost_usd=_usd(job.cost_usd),
            estimated_cost_usd=_usd(job.estimate_usd),
            attempts=job.attempts,
            priority=job.priority,
            created_at=job.created_at,
            updated_at=job.updated_at,
            deadline_at=job.deadline_at,
            claimed_at=job.claimed_at,
            submitted_at=job.submitted_at,
            finished_at=job.finished_at,
            request=job.request,
            failure=failure,
            retry_of=job.retry_of,
            callback_url=job.callback_url,
            images=[ImageView.from_image(image, url_of) for image in job.images],
            events=[EventView.from_event(event) for event in job.events],
        )


class BatchView(_View):
    """The jobs of a batch, in the order of its requests."""

    jobs: list[JobView]


class JobPageView(_View):
    """A page of the tenant's jobs, newest first."""

    jobs: list[JobView]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )

    @classmethod
    def from_page(cls, page: JobPage, url_of: UrlOf | None = None) -> JobPageView:
        return cls(
            jobs=[JobView.from_job(job, url_of) for job in page.jobs],
            next_cursor=None if page.next is None else cursor_of(page.next),
        )


class CallbackAttemptView(_View):
    """One delivery attempt of a callback."""

    at: datetime
    status_code: int | None = Field(description="The answer's HTTP status; null: none came.")
    latency_ms: float
    answer: str = Field(description="The first characters of the answer.")
    error: str | None = Field(description="Why no answer came, when none did.")

    @classmethod
    def from_attempt(cls, attempt: Attempt) -> CallbackAttemptView:
        return cls(
            at=attempt.at,
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            answer=attempt.answer,
            error=attempt.error,
        )


class CallbackView(_View):
    """A job's terminal event and how its delivery stands."""

    id: str = Field(description="The webhook-id, the same on every attempt.")
    type: str = Field(description="job.succeeded, job.failed or job.canceled.")
    url: str
    status: CallbackStatus = Field(
        description="pending, delivered, dead (every attempt failed; replayable) or gone (410)."
    )
    created_at: datetime
    delivered_at: datetime | None
    attempts: list[CallbackAttemptView] = Field(description="Every attempt, oldest first.")

    @classmethod
    def from_event(cls, event: CallbackEvent) -> CallbackView:
        return cls(
            id=event.webhook_id,
            type=event.type,
            url=event.url,
            status=event.status,
            created_at=event.created_at,
            delivered_at=event.delivered_at,
            attempts=[CallbackAttemptView.from_attempt(a) for a in event.attempts],
        )


class CallbacksView(_View):
    """A job's callback events: none until a job with a callbackUrl is terminal."""

    callbacks: list[CallbackView]


class ErrorItem(_View):
    """One reason a request was refused, naming the field and the rule it broke."""

    field: str
    rule: str
    message: str


class ErrorBody(_View):
    """Every reason a request was refused, together."""

    errors: list[ErrorItem]

    @classmethod
    def of(cls, issues: list[FieldIssue]) -> ErrorBody:
        return cls(
            errors=[ErrorItem(field=i.field, rule=i.rule, message=i.message) for i in issues]
        )
