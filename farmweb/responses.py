"""The refusals every job API route documents in OpenAPI, in the one error body."""

from __future__ import annotations

from typing import Any

from farmdomain.views import ErrorBody


def refusal(description: str) -> dict[str, Any]:
    """An OpenAPI response entry answered with the error body."""
    return {"model": ErrorBody, "description": description}


# refusals any /v1 route may give before or besides its handler (farmweb.limits,
# farmweb.auth, a store outage), declared on every route so the schema stays true
GUARDED_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: refusal("The body is not JSON or nests too deeply."),
    401: refusal("No bearer token, or an unknown or revoked one."),
    403: refusal("The token may not do this (read-only)."),
    408: refusal("The body took too long to arrive."),
    413: refusal("The body is over the size limit."),
    429: refusal("Over the request rate; see Retry-After."),
    503: refusal("The job store cannot be reached; retry, with the same idempotency key."),
}


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


# what every answer of a /v1 route carries (farmweb.request_ids, farmweb.limits)
_EVERY_ANSWER = {
    "X-Request-Id": _header("This request's id: the caller's own X-Request-Id, or a new one."),
    "RateLimit-Limit": _header("Requests this token (or address) may make at once."),
    "RateLimit-Remaining": _header("Requests left in the bucket now."),
    "RateLimit-Reset": _header("Seconds until the bucket is full again."),
}
_RETRY_AFTER = {"Retry-After": _header("Seconds to wait before trying again.")}


def document_headers(schema: dict[str, Any]) -> None:
    """Name, on every /v1 answer in the OpenAPI `schema`, the headers it carries."""
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith("/v1/"):
            continue
        for operation in operations.values():
            for code, response in operation.get("responses", {}).items():
                retry = _RETRY_AFTER if code in ("429", "503") else {}
                response.setdefault("headers", {}).update({**_EVERY_ANSWER, **retry})
