"""The one error tree of fluxfarm, split by what the caller does next.

FluxfarmError
├── RequestRejected            reject the caller's request; nothing was stored or queued
│   ├── RequestInvalid         the FLUX.2 [pro] rules failed: carries every FieldIssue
│   ├── IdempotencyConflict    the key was used before with a different request
│   ├── JobNotFound            no job with that id (for this tenant)
│   ├── NotRetryable           only a failed job can be queued again
│   ├── Unauthenticated        401: no bearer token, or one that is unknown or revoked
│   ├── Forbidden              403: the token may not do this (a read-only token writing)
│   ├── LimitExceeded          a request over a limit: size, nesting, rate, slowness
│   └── BudgetExceeded         402: the tenant's remaining budget cannot cover the estimate
├── ProviderError              Runware answered badly (raised by the worker's client only)
│   ├── TransientProviderError retry with the same taskUUID (408, 429, 5xx, timeouts)
│   └── PermanentProviderError fail the job with Runware's code, message and parameter
├── StoreUnavailable           the database cannot be reached; retry (same idempotency key)
├── WebhookRejected            a result POST that must change nothing (4xx to the sender)
├── WaitTimedOut               a job did not reach a terminal state in the time asked
├── DownloadRefused            a result image we will not fetch or keep (host, size, type)
├── ResultsStoreError          the results store did not take or give an image
│   ├── ResultsStoreUnavailable   unreachable or failing: retry the copy later
│   └── ResultsStoreConflict      the key holds other bytes: never overwritten
└── ConfigurationError         the settings cannot work; fix the environment
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


class FluxfarmError(Exception):
    """Base of every error fluxfarm raises on purpose."""


@dataclass(frozen=True)
class FieldIssue:
    """One broken rule: the field (dotted path, Runware's names) and the rule it broke."""

    field: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


class RequestRejected(FluxfarmError):
    """The caller's request cannot be accepted; nothing was stored or queued."""


class RequestInvalid(RequestRejected):
    """A generation request broke one or more FLUX.2 [pro] parameter rules."""

    def __init__(self, issues: list[FieldIssue]) -> None:
        self.issues = issues
        summary = "; ".join(f"{i.field}: {i.message}" for i in issues)
        super().__init__(f"invalid generation request: {summary}")


class IdempotencyConflict(RequestRejected):
    """An idempotency key came back with a request that differs from the first one."""

    def __init__(self, idempotency_key: str, job_id: str) -> None:
        self.idempotency_key = idempotency_key
        self.job_id = job_id
        super().__init__(
            f"idempotency key {idempotency_key!r} already names job {job_id} "
            "with a different request"
        )


class JobNotFound(RequestRejected):
    """No job has that id (or it belongs to another tenant)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} not found")


class NotRetryable(RequestRejected):
    """A retry was asked for a job that has not failed."""

    def __init__(self, job_id: str, state: str) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(f"job {job_id} is {state}: only a failed job can be retried")


class Unauthenticated(RequestRejected):
    """The job API needs a valid bearer token and did not get one."""


class Forbidden(RequestRejected):
    """The caller is known but its token does not allow this action."""

    def __init__(self, tenant: str, action: str) -> None:
        self.tenant = tenant
        self.action = action
        super().__init__(f"the token of tenant {tenant!r} may not {action}")


class LimitExceeded(RequestRejected):
    """A request over one of the job API's limits; `reason` labels the metric."""

    def __init__(self, reason: str, status_code: int, message: str) -> None:
        self.reason = reason
        self.status_code = status_code
        super().__init__(message)


class BudgetExceeded(RequestRejected):
    """The jobs asked for would pass one of the tenant's budgets: refused before queueing."""

    def __init__(
        self, budget: str, remaining_usd: Decimal, estimate_usd: Decimal, field: str = "request"
    ) -> None:
        self.remaining_usd = remaining_usd
        self.estimate_usd = estimate_usd
        self.field = field
        super().__init__(
            f"{budget}: ${max(remaining_usd, Decimal(0)).normalize():f} remains and the"
            f" jobs are estimated at ${estimate_usd.normalize():f}"
        )


class ProviderError(FluxfarmError):
    """Runware (or the network to it) did not accept a task."""

    def __init__(
        self,
        task_uuid: str,
        reason: str,
        message: str,
        code: str | None = None,
        parameter: str | None = None,
        http_status: int | None = None,
    ) -> None:
        self.task_uuid = task_uuid
        self.reason = reason
        self.code = code
        self.parameter = parameter
        self.http_status = http_status
        self.detail = message
        where = f" (parameter {parameter})" if parameter else ""
        super().__init__(f"task {task_uuid}: {reason}: {code or 'error'}: {message}{where}")


# 429 rate limit, 503 at capacity, 504 queue wait exceeded
SLOW_DOWN_STATUSES = frozenset({429, 503, 504})


class TransientProviderError(ProviderError):
    """Worth retrying with the same taskUUID after a backoff."""

    def __init__(
        self,
        task_uuid: str,
        reason: str,
        message: str,
        code: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(task_uuid, reason, message, code=code, http_status=http_status)
        self.retry_after = retry_after

    @property
    def slow_down(self) -> bool:
        """Runware is refusing for its load, not for this task (a rate limit, an overload, a
        full queue, or any answer naming a Retry-After): the task is retried until its
        deadline, and the fleet holds new claims back."""
        return self.http_status in SLOW_DOWN_STATUSES or self.retry_after is not None


class PermanentProviderError(ProviderError):
    """Retrying cannot help: the job fails with Runware's code, message and parameter."""


class StoreUnavailable(FluxfarmError):
    """The job store cannot be reached; nothing is known to have changed. Retry later, with
    the same idempotency key when submitting."""


class WebhookRejected(FluxfarmError):
    """A webhook delivery that must leave the store untouched; `outcome` labels the metric."""

    def __init__(self, outcome: str, status_code: int, message: str) -> None:
        self.outcome = outcome
        self.status_code = status_code
        super().__init__(message)


class DownloadRefused(FluxfarmError):
    """A result image that is not fetched, or not kept: wrong host, address, size or type."""

    def __init__(self, url: str, reason: str, message: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {message}")


class ResultsStoreError(FluxfarmError):
    """The results store did not take or give an image; `reason` labels the metric."""

    def __init__(self, key: str, reason: str, message: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"results store, key {key}: {message}")


class ResultsStoreUnavailable(ResultsStoreError):
    """The results store cannot be reached or failed the request: retry later; nothing
    half-written is ever visible under the key."""


class ResultsStoreConflict(ResultsStoreError):
    """The key already holds different bytes: it is never overwritten."""


class WaitTimedOut(FluxfarmError):
    """`wait` gave up before the job reached a terminal state; the job goes on."""

    def __init__(self, job_id: str, state: str, timeout_s: float) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(f"job {job_id} still {state} after {timeout_s:g}s")


class ConfigurationError(FluxfarmError):
    """A setting cannot work: names the environment variable and why."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting = setting
        self.reason = reason
