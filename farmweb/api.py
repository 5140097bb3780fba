"""The HTTP routes of producers: submit, read and cancel jobs as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from farmdomain import metrics
from farmdomain.errors import (
    FieldIssue,
    Forbidden,
    IdempotencyConflict,
    JobNotFound,
    RequestInvalid,
    Unauthenticated,
)
from farmdomain.request_schema import GenerationRequest, parse_request
from farmdomain.text import no_control
from farmdomain.views import BatchView, ErrorBody, JobView, UrlOf
from farmweb.auth import Caller, caller, client_for, writer
from farmweb.responses import GUARDED_RESPONSES
from farmweb.waiting import MAX_WAIT_S, TerminalWatch
from producers.client import (
    BATCH_IDEMPOTENCY_KEY_MAX,
    DEADLINE_MAX_S,
    IDEMPOTENCY_KEY_MAX,
    FluxfarmClient,
)

# pydantic's error types for the envelope fields, in the rule names core's schema uses
_ENVELOPE_RULES = {
    "missing": "required",
    "extra_forbidden": "unknown_parameter",
    "json_invalid": "json",
    "model_attributes_type": "object",
    "dict_type": "object",
    "list_type": "array",
    "string_type": "string",
    "string_too_short": "min_length",
    "string_too_long": "max_length",
    "float_type": "number",
    "float_parsing": "number",
    "finite_number": "number",
    "greater_than": "exclusive_minimum",
    "less_than_equal": "maximum",
    "value_error": "characters",
}


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
        job, created = client.submit_job(body.request, body.idempotency_key, body.deadline_seconds)
        if not created:
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
        queued = client.submit_jobs(body.requests, body.idempotency_key, body.deadline_seconds)
        if not any(created for _, created in queued):
            response.status_code = status.HTTP_200_OK
        return BatchView(jobs=[JobView.from_job(job) for job, _ in queued])

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

    return router


def install_error_handlers(app: FastAPI) -> None:
    """Answer every refusal with the one error body: {"errors": [{field, rule, message}]}."""
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.add_exception_handler(RequestInvalid, _invalid_request)
    app.add_exception_handler(IdempotencyConflict, _idempotency_conflict)
    app.add_exception_handler(JobNotFound, _job_not_found)
    app.add_exception_handler(Unauthenticated, _unauthenticated)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(HTTPException, _http_error)


def _refusal(status_code: int, issues: list[FieldIssue]) -> JSONResponse:
    return JSONResponse(ErrorBody.of(issues).model_dump(mode="json"), status_code=status_code)


def _in_request(issue: FieldIssue) -> FieldIssue:
    field = "request" if issue.field == "request" else f"request.{issue.field}"
    return FieldIssue(field, issue.rule, issue.message)


def _field_name(path: Sequence[str | int]) -> str:
    """A field as our errors name it: `requests[3].width`."""
    return "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" if i else part
        for i, part in enumerate(path)
    )


def _envelope_issue(error: Any) -> FieldIssue:
    path = error["loc"][1:]
    field = "body" if not path or error["type"] == "json_invalid" else _field_name(path)
    message = str(error["msg"])
    return FieldIssue(field, _ENVELOPE_RULES.get(error["type"], error["type"]), message)


def _request_issues(body: Any) -> list[FieldIssue]:
    """The request's issues as core's schema names them (pydantic's names differ)."""
    try:
        parse_request(body["request"])
    except RequestInvalid as exc:
        return [_in_request(issue) for issue in exc.issues]
    return []


async def _invalid_body(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    in_request = [
        e for e in errors if e["loc"][:2] == ("body", "request") and e["type"] != "missing"
    ]
    issues = [_envelope_issue(e) for e in errors if e not in in_request]
    if in_request:
        request_issues = _request_issues(exc.body) if isinstance(exc.body, dict) else []
        issues += request_issues or [_envelope_issue(e) for e in in_request]
    return _refusal(status.HTTP_422_UNPROCESSABLE_CONTENT, issues)


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestInvalid)
    return _refusal(status.HTTP_422_UNPROCESSABLE_CONTENT, exc.issues)


async def _idempotency_conflict(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IdempotencyConflict)
    issue = FieldIssue("idempotencyKey", "same_request", str(exc))
    return _refusal(status.HTTP_409_CONFLICT, [issue])


async def _job_not_found(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JobNotFound)
    return _refusal(status.HTTP_404_NOT_FOUND, [FieldIssue("job_id", "exists", str(exc))])


def _rejected(reason: str) -> None:
    metrics.metrics().requests_rejected.labels("api", reason).inc()


async def _unauthenticated(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Unauthenticated)
    _rejected("unauthenticated")
    response = _refusal(
        status.HTTP_401_UNAUTHORIZED, [FieldIssue("authorization", "bearer_token", str(exc))]
    )
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _forbidden(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Forbidden)
    _rejected("forbidden")
    return _refusal(status.HTTP_403_FORBIDDEN, [FieldIssue("authorization", "scope", str(exc))])


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own refusals (a body it cannot decode, an unknown route) in our error shape
    assert isinstance(exc, HTTPException)
    rule = "json" if exc.status_code == status.HTTP_400_BAD_REQUEST else "http"
    response = _refusal(exc.status_code, [FieldIssue("body", rule, str(exc.detail))])
    response.headers.update(exc.headers or {})
    return response
