"""The one error tree of fluxfarm-client, split by what the caller does next.

FluxfarmClientError
├── ApiError                  the farm answered with a refusal (its error body, parsed)
│   ├── InvalidRequest        400/422: fix the request; `errors` names each field and rule
│   ├── BudgetExceeded        402: a budget of the tenant cannot cover the jobs; none queued
│   ├── Unauthorized          401: no token, or an unknown or revoked one
│   ├── Forbidden             403: the token may not do this (read-only)
│   ├── NotFound              404: no such job for this token's tenant
│   ├── Conflict              409: the idempotency key names a job with another request
│   ├── RateLimited           429, still after every retry
│   ├── Unavailable           503, still after every retry
│   └── ServerError           any other 5xx
├── TransportError            the farm could not be reached, still after every retry
├── WaitTimedOut              the job was not terminal within the time asked; it goes on
├── DownloadError             an image could not be fetched or kept
│   └── ChecksumMismatch      the bytes fetched are not those the farm recorded
└── CallbackVerificationError a callback's signature, timestamp or body does not verify
"""

from __future__ import annotations

from dataclasses import dataclass


class FluxfarmClientError(Exception):
    """Base of every error fluxfarm-client raises."""


@dataclass(frozen=True)
class ErrorItem:
    """One reason the farm refused a request: the field and the rule it broke."""

    field: str
    rule: str
    message: str


class ApiError(FluxfarmClientError):
    """The farm refused the request; `errors` holds every reason it gave."""

    def __init__(
        self, status_code: int, errors: list[ErrorItem], request_id: str | None = None
    ) -> None:
        self.status_code = status_code
        self.errors = errors
        self.request_id = request_id
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors) or "no error body"
        where = f" (request {request_id})" if request_id else ""
        super().__init__(f"{status_code}: {summary}{where}")


class InvalidRequest(ApiError):
    """The request broke one or more rules; nothing was stored or queued."""


class BudgetExceeded(ApiError):
    """The tenant's remaining daily or monthly budget cannot cover the jobs' estimate; nothing
    was queued. Not retried: only a new period, or a larger budget, makes room."""


class Unauthorized(ApiError):
    """The farm needs a valid bearer token and did not get one."""


class Forbidden(ApiError):
    """The token is known but may not do this."""


class NotFound(ApiError):
    """No job has that id for this token's tenant."""


class Conflict(ApiError):
    """The idempotency key already names a job with a different request."""


class RateLimited(ApiError):
    """Over the farm's request rate, and still so after every retry."""


class Unavailable(ApiError):
    """The farm (or its store) was unavailable, and still so after every retry."""


class ServerError(ApiError):
    """The farm failed while answering."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    402: BudgetExceeded,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}


def api_error(status_code: int, errors: list[ErrorItem], request_id: str | None) -> ApiError:
    """The ApiError subclass that says what a `status_code` refusal means."""
    kind = _BY_STATUS.get(status_code, ServerError if status_code >= 500 else ApiError)
    return kind(status_code, errors, request_id)


class TransportError(FluxfarmClientError):
    """The farm could not be reached (connect, read or write failed or timed out)."""


class WaitTimedOut(FluxfarmClientError):
    """`wait` gave up before the job reached a terminal state; the job goes on."""

    def __init__(self, job_id: str, state: str, timeout_s: float) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(f"job {job_id} still {state} after {timeout_s:g}s")


class DownloadError(FluxfarmClientError):
    """An image of a job could not be fetched, or not kept."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        super().__init__(f"{url}: {message}")


class ChecksumMismatch(DownloadError):
    """The fetched bytes' sha256 differs from the one the farm recorded; nothing was kept."""


class CallbackVerificationError(FluxfarmClientError):
    """A callback failed verification: missing headers, a bad signature, a timestamp out
    of the tolerated window, or a body that is not a callback event. Answer it 4xx."""
