"""The Runware REST client: one pooled httpx client per process, and the one place where
HTTP outcomes become fluxfarm errors."""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from core.errors import (
    ConfigurationError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from core.jobs import FailureReason
from core.request_schema import MODEL_ID
from core.settings import Settings
from worker import instrumentation

# Runware's `code` for a taskUUID it already has: on a resubmission, our first try landed.
ALREADY_ACCEPTED = "conflictTaskUUID"

_SAFETY_CODES = frozenset(
    {
        "contentPolicyViolation",
        "providerContentPolicyViolation",
        "sensitiveContentDetected",
        "unsafeContentDetected",
        "nsfwContentDetected",
        "promptBlocked",
        "imageBlocked",
        "moderationFailed",
    }
)
_PROVIDER_CODES = frozenset(
    {
        "inferenceError",
        "processingFailed",
        "taskFailed",
        "downloadFailed",
        "uploadFailed",
        "noAvailableServer",
        "modelUnavailable",
        "modelDisabled",
        "modelNotReady",
    }
)


def reason_for_code(code: str | None, http_status: int | None = None) -> FailureReason:
    """Runware's unstable error codes folded into the few reasons alerts key on."""
    text = code or ""
    lowered = text.lower()
    if http_status == 402 or any(w in lowered for w in ("credit", "quota", "balance", "payment")):
        return FailureReason.QUOTA
    if (
        http_status in (401, 403)
        or "apikey" in lowered
        or lowered
        in (
            "unauthorized",
            "forbidden",
            "authenticationfailed",
            "tokenexpired",
            "accountsuspended",
        )
    ):
        return FailureReason.AUTH
    if http_status == 429 or "ratelimit" in lowered:
        return FailureReason.RATE_LIMIT
    if text in _SAFETY_CODES:
        return FailureReason.SAFETY
    if "timeout" in lowered or http_status in (408, 504):
        return FailureReason.TIMEOUT
    if text in _PROVIDER_CODES or text.startswith("provider"):
        return FailureReason.PROVIDER
    if (http_status is not None and http_status >= 500) or lowered in (
        "internalservererror",
        "serviceunavailable",
        "serverunavailable",
        "unknownerror",
        "standarderror",
    ):
        return FailureReason.SERVER
    if http_status is not None and 400 <= http_status < 500:
        return FailureReason.VALIDATION
    return FailureReason.PROVIDER


def inference_task(task_uuid: str, params: dict[str, Any], webhook_url: str) -> dict[str, Any]:
    """The imageInference task for one job: async, with cost, results by webhook."""
    return {
        **params,
        "taskType": "imageInference",
        "taskUUID": task_uuid,
        "model": MODEL_ID,
        "deliveryMethod": "async",
        "includeCost": True,
        "webhookURL": webhook_url,
    }


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None  # an unusable header is ignored, not a crash of the submit
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _error_items(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, list):
        return [e for e in body if isinstance(e, dict)]
    if not isinstance(body, dict):
        return []
    found = body.get("errors") or body.get("error") or []
    items = found if isinstance(found, list) else [found]
    return [e for e in items if isinstance(e, dict)]


class RunwareClient:
    """Submits tasks and polls results; never holds a connection open for a generation."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        if settings.runware_api_key is None:
            raise ConfigurationError("FLUXFARM_RUNWARE_API_KEY must be set to reach Runware")
        self._url = settings.runware_url
        self._api_key = settings.runware_api_key
        self._http = httpx.Client(
            timeout=httpx.Timeout(settings.submit_timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def submit(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        """POST one task; returns the acknowledgement's data items.

        Raises TransientProviderError (retry with the same taskUUID) or
        PermanentProviderError (fail the job). `conflictTaskUUID` counts as accepted.
        """
        task_uuid = task["taskUUID"]
        exchange = self._exchange(task_uuid, task)
        if any(e.get("code") == ALREADY_ACCEPTED for e in exchange.errors):
            return []
        if exchange.status >= 400 or exchange.errors:
            raise exchange.failure(task_uuid)
        return exchange.data

    def get_response(self, task_uuid: str) -> _Exchange:
        """The cumulative state of every generation of a task (getResponse).

        Runware's answer for a task it does not know comes back as the exchange's errors;
        only failures to ask at all are raised.
        """
        exchange = self._exchange(task_uuid, {"taskType": "getResponse", "taskUUID": task_uuid})
        if exchange.transient or exchange.status in (401, 402, 403):
            raise exchange.failure(task_uuid)
        return exchange

    def _exchange(self, task_uuid: str, task: dict[str, Any]) -> _Exchange:
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Content-Type": "application/json",
        }
        started = time.perf_counter()
        try:
            response = self._http.post(self._url, content=orjson.dumps([task]), headers=headers)
        except httpx.TimeoutException as exc:
            instrumentation.provider_request(task, "timeout", started)
            raise TransientProviderError(
                task_uuid, FailureReason.TIMEOUT, f"no answer in time ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            instrumentation.provider_request(task, "error", started)
            raise TransientProviderError(
                task_uuid, FailureReason.SERVER, f"connection failed ({type(exc).__name__})"
            ) from exc
        instrumentation.provider_request(task, str(response.status_code), started)
        try:
            body = orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            body = {}
        data = body.get("data", []) if isinstance(body, dict) else []
        return _Exchange(
            status=response.status_code,
            data=[d for d in data if isinstance(d, dict)] if isinstance(data, list) else [],
            errors=[e for e in _error_items(body) if e.get("taskUUID") in (task_uuid, None)],
            retry_after=_retry_after(response),
        )


@dataclass(frozen=True)
class _Exchange:
    """One answered POST: its status and the items that concern our task."""

    status: int
    data: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    retry_after: float | None

    @property
    def transient(self) -> bool:
        return self.status in (408, 429) or self.status >= 500

    def failure(self, task_uuid: str) -> ProviderError:
        first = self.errors[0] if self.errors else {}
        code = first.get("code") if isinstance(first.get("code"), str) else None
        message = str(first.get("message") or f"HTTP {self.status}")[:2000]
        parameter = first.get("parameter") if isinstance(first.get("parameter"), str) else None
        reason = reason_for_code(code, self.status)
        if self.transient:
            return TransientProviderError(
                task_uuid,
                reason,
                message,
                code=code,
                http_status=self.status,
                retry_after=self.retry_after,
            )
        return PermanentProviderError(
            task_uuid, reason, message, code=code, parameter=parameter, http_status=self.status
        )
