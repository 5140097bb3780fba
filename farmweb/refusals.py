"""The job API's refusals: every error answered with the one body,
{"errors": [{field, rule, message}]}, whichever layer refused (FastAPI's validation of the
envelope, the FLUX.2 [pro] request schema, the store, auth)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from farmdomain import metrics
from farmdomain.errors import (
    BudgetExceeded,
    FieldIssue,
    Forbidden,
    IdempotencyConflict,
    JobNotFound,
    RequestInvalid,
    Unauthenticated,
)
from farmdomain.request_schema import parse_request
from farmdomain.views import ErrorBody

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
    "greater_than_equal": "minimum",
    "less_than_equal": "maximum",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "enum": "allowed_values",
    "datetime_parsing": "datetime",
    "datetime_from_date_parsing": "datetime",
    "timezone_aware": "timezone",
    "value_error": "characters",
}


def install_error_handlers(app: FastAPI) -> None:
    """Answer every refusal with the one error body: {"errors": [{field, rule, message}]}."""
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.add_exception_handler(RequestInvalid, _invalid_request)
    app.add_exception_handler(IdempotencyConflict, _idempotency_conflict)
    app.add_exception_handler(BudgetExceeded, _budget_exceeded)
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


async def _budget_exceeded(_request: Request, exc: Exception) -> JSONResponse:
    # 402, not 429: waiting a little does not help, only a new period or a larger budget
    assert isinstance(exc, BudgetExceeded)
    _rejected("budget")
    return _refusal(status.HTTP_402_PAYMENT_REQUIRED, [FieldIssue(exc.field, "budget", str(exc))])


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
