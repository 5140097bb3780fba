"""The HTTP routes of producers: submit, read and cancel jobs as JSON."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictInt
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from farmdomain.admission import DEFAULT_PRIORITY, PRIORITY_MAX, PRIORITY_MIN
from farmdomain.callbacks import CALLBACK_URL_MAX
from farmdomain.jobs import JobState
from farmdomain.listing import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, JobQuery, position_of
from farmdomain.request_schema import GenerationRequest
from farmdomain.text import no_control
from farmdomain.views import (
    BatchView,
    CallbacksView,
    CallbackView,
    ErrorBody,
    JobPageView,
    JobView,
    UrlOf,
)
from farmweb.auth import Caller, caller, client_for, writer
from farmweb.responses import GUARDED_RESPONSES
from farmweb.waiting import MAX_WAIT_S, TerminalWatch
from producers.client import (
    BATCH_IDEMPOTENCY_KEY_MAX,
    DEADLINE_MAX_S,
    IDEMPOTENCY_KEY_MAX,
    FluxfarmClient,
)

# where a job's terminal event is POSTed; the host is checked against the tenant's allowed
# ones once the body is well formed (farmdomain.callbacks.url_issues)
CallbackUrl = Annotated[
    str, Field(min_length=1, max_length=CALLBACK_URL_MAX), AfterValidator(no_control)
]
_CALLBACK_URL_DESCRIPTION = (
    "Where the job's terminal event (job.succeeded, job.failed, job.canceled) is POSTed,"
    " signed per Standard Webhooks: an http(s) URL on a host the operator allows"
    " (FLUXFARM_CALLBACK_ALLOWED_HOSTS, FLUXFARM_CALLBACK_TENANT_HOSTS)."
)


Priority = Annotated[StrictInt, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)]
_PRIORITY_DESCRIPTION = (
    "Inside the tenant, a higher priority is admitted to Runware first; waiting counts too"
    " (one step per FLUXFARM_ADMISSION_PRIORITY_AGING_S), so no job waits forever."
)

# far longer than any cursor farmdomain.listing makes
CURSOR_MAX = 512


class SubmitBody(BaseModel):
    """A job to queue: the Runware parameters and how to queue them."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)

    request: GenerationRequest = Field(description="FLUX.2 [pro] imageInference parameters.")
    idempotency_key: (
        Annotated[
            str, Field(min_length=1, max_length=IDEMPOTENCY_KEY_MAX), AfterValidator(no_control)
        ]
        | None
    ) = Field(None, description="The same key always names the same job, queued once.")
    deadline_seconds: Annotated[float, Field(gt=0, le=DEADLINE_MAX_S)] | None = Field(
        None, description="Time from creation to a terminal state; default from settings."
    )
    callback_url: CallbackUrl | None = Field(None, description=_CALLBACK_URL_DESCRIPTION)
    priority: Priority = Field(DEFAULT_PRIORITY, description=_PRIORITY_DESCRIPTION)


class SubmitBatchBody(BaseModel):
    """Jobs to queue together, all or none."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)

    requests: list[dict[str, Any]] = Field(
        description="FLUX.2 [pro] imageInference parameters, each as `request` in POST /v1/jobs;"
        " at most FLUXFARM_SUBMIT_MANY_MAX of them. An error names a request by its index,"
        " e.g. `requests[3].width`."
    )
    idempotency_key: (
        Annotated[
            str,
            Field(min_length=1, max_length=BATCH_IDEMPOTENCY_KEY_MAX),
            AfterValidator(no_control),
        ]
        | None
    ) = Field(
        None,
        description="Request i of the batch is known by `{key}/{i}`, as if submitted alone"
        " with that key: the same batch sent again returns the same jobs.",
    )
    deadline_seconds: Annotated[float, Field(gt=0, le=DEADLINE_MAX_S)] | None = Field(
        None, description="Time from creation to a terminal state, for each job."
    )
    callback_url: CallbackUrl | None = Field(
        None, description=_CALLBACK_URL_DESCRIPTION + " Each job of the batch calls it back."
    )
    priority: Priority = Field(
        DEFAULT_PRIORITY, description=_PRIORITY_DESCRIPTION + " Each job of the batch has it."
    )


def _reader(request: Request, who: Annotated[Caller, Depends(caller)]) -> FluxfarmClient:
    return client_for(request, who)


def _writer(request: Request, who: Annotated[Caller, Depends(writer)]) -> FluxfarmClient:
    return client_for(request, who)


Reader = Annotated[FluxfarmClient, Depends(_reader)]
Writer = Annotated[FluxfarmClient, Depends(_writer)]


_INVALID: dict[int | str, dict[str, Any]] = {
    status.HTTP_422_UNPROCESSABLE_CONTENT: {
        "model": ErrorBody,
        "description": "Every broken rule of the request, together.",
    },
    **GUARDED_RESPONSES,
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"model": ErrorBody, "description": "No such job for this tenant."},
    **_INVALID,
}


def _submitted(
    view: type[BaseModel], *, repeated: str, created: str, conflict: str
) -> dict[int | str, dict[str, Any]]:
    """The answers of a submitting route, described."""
    return {
        status.HTTP_200_OK: {"model": view, "description": repeated},
        status.HTTP_201_CREATED: {"description": created},
        status.HTTP_402_PAYMENT_REQUIRED: {
            "model": ErrorBody,
            "description": "A budget of the tenant cannot cover the estimate; nothing queued.",
        },
        status.HTTP_409_CONFLICT: {"model": ErrorBody, "description": conflict},
        **_INVALID,
    }


def build_router(durable_url: UrlOf | None = None) -> APIRouter:
    """The /v1/jobs routes; the app provides a FluxfarmClient as `app.state.client`.
    `durable_url` turns a kept image's key into its URL (none: images show no url)."""
    router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

    @router.post(
        "",
        operation_id="submitJob",
        status_code=status.HTTP_201_CREATED,
        response_model=JobView,
        responses=_submitted(
            JobView,
            repeated="The idempotency key already named this job; nothing new queued.",
            created="The job was created and queued.",
            conflict="The idempotency key names a job with a different request.",
        ),
    )
    def submit_job(body: SubmitBody, response: Response, client: Writer) -> JobView:
        job, created = client.submit_job(
            body.request,
            body.idempotency_key,
            body.deadline_seconds,
            body.callback_url,
            body.priority,
        )
        if created:
            # a job just created is all in the row that was inserted: no second read
            return JobView.from_job(job)
        response.status_code = status.HTTP_200_OK
        return JobView.from_job(client.get(job.id))

    @router.post(
        "/batch",
        operation_id="submitJobs",
        status_code=status.HTTP_201_CREATED,
        response_model=BatchView,
        responses=_submitted(
            BatchView,
            repeated="The idempotency key already named every job; nothing queued.",
            created="Jobs were created and queued.",
            conflict="A request's key names a job with a different request.",
        ),
    )
    def submit_batch(body: SubmitBatchBody, response: Response, client: Writer) -> BatchView:
        queued = client.submit_jobs(
            body.requests,
            body.idempotency_key,
            body.deadline_seconds,
            body.callback_url,
            body.priority,
        )
        if not any(created for _, created in queued):
            response.status_code = status.HTTP_200_OK
        return BatchView(jobs=[JobView.from_job(job) for job, _ in queued])

    @router.get("", operation_id="listJobs", response_model=JobPageView, responses=_INVALID)
    def list_jobs(
        client: Reader,
        state: Annotated[
            list[JobState] | None,
            Query(description="Only jobs in these states; repeat for several."),
        ] = None,
        created_after: Annotated[
            AwareDatetime | None,
            Query(alias="createdAfter", description="Only jobs created after this time."),
        ] = None,
        created_before: Annotated[
            AwareDatetime | None,
            Query(alias="createdBefore", description="Only jobs created before this time."),
        ] = None,
        idempotency_key: Annotated[
            str | None,
            Query(alias="idempotencyKey", min_length=1, max_length=IDEMPOTENCY_KEY_MAX),
            AfterValidator(no_control),
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=LIST_LIMIT_MAX, description="Most jobs on the page.")
        ] = LIST_LIMIT_DEFAULT,
        cursor: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=CURSOR_MAX,
                description="`nextCursor` of the page before; none: the newest jobs.",
            ),
        ] = None,
    ) -> JobPageView:
        query = JobQuery(
            states=tuple(dict.fromkeys(state or ())),
            created_after=created_after,
            created_before=created_before,
            idempotency_key=idempotency_key,
            limit=limit,
            after=None if cursor is None else position_of(cursor),
        )
        return JobPageView.from_page(client.list_jobs(query), durable_url)

    @router.get("/{job_id}", operation_id="getJob", response_model=JobView, responses=_NOT_FOUND)
    async def get_job(
        job_id: str,
        request: Request,
        client: Reader,
        wait: Annotated[
            float,
            Query(
                ge=0,
                le=MAX_WAIT_S,
                description="Seconds to hold the answer until the job is terminal; answered"
                " at once when it is (or becomes) terminal, else as it stands after `wait`.",
            ),
        ] = 0,
    ) -> JobView:
        job = await run_in_threadpool(client.get, job_id)
        if wait and not job.state.terminal:
            watch: TerminalWatch = request.app.state.terminal_watch
            await watch.wait(job_id, wait)
            job = await run_in_threadpool(client.get, job_id)
        return JobView.from_job(job, durable_url)

    @router.post(
        "/{job_id}/cancel", operation_id="cancelJob", response_model=JobView, responses=_NOT_FOUND
    )
    def cancel_job(job_id: str, client: Writer) -> JobView:
        return JobView.from_job(client.cancel(job_id), durable_url)

    @router.get(
        "/{job_id}/callbacks",
        operation_id="getJobCallbacks",
        response_model=CallbacksView,
        responses=_NOT_FOUND,
    )
    def job_callbacks(job_id: str, client: Reader) -> CallbacksView:
        events = client.callbacks(job_id)
        return CallbacksView(callbacks=[CallbackView.from_event(event) for event in events])

    return router
