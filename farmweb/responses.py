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
