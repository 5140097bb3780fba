"""The Runware REST client: one pooled httpx client per process, and the one place where
HTTP outcomes become fluxfarm errors."""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from typing import Any, cast

import httpx
import orjson

from farmdomain.errors import (
    ConfigurationError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from farmdomain.jobs import FailureReason
from farmdomain.request_schema import MODEL_ID
from farmdomain.settings import Settings
from farmdomain.text import escaped
from runware_edge import instrumentation
from runware_edge.bodies import first_parameter
from runware_edge.codes import ALREADY_ACCEPTED, reason_for_code
from runware_edge.wire import ErrorBody, GetResponseTask, InferenceTask, ResultItem


def inference_task(
    task_uuid: str,
    params: dict[str, Any],
    webhook_url: str,
    *,
    ttl_s: int | None = None,
    upload_url: str | None = None,
) -> InferenceTask:
    """The imageInference task for one job: async, with cost, results by webhook; an
    imageURL kept `ttl_s` seconds unless the caller asked for a ttl of its own; the image
    PUT to `upload_url` too when one is given (uploadEndpoint)."""
    # ttl only applies to URL output; Runware refuses it with the others
    url_output = params.get("outputType", "URL") == "URL"
    lifetime = {"ttl": ttl_s} if ttl_s is not None and url_output and "ttl" not in params else {}
    # the params passed the request schema: they are the task's own fields
    fields = cast(InferenceTask, {**params, **lifetime})
    task: InferenceTask = {
        **fields,
        "taskType": "imageInference",
        "taskUUID": task_uuid,
        "model": MODEL_ID,
        "deliveryMethod": "async",
        "includeCost": True,
        "webhookURL": webhook_url,
    }
    if upload_url is not None:
        task["uploadEndpoint"] = upload_url
    return task


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


def _items(body: Any, status: int) -> tuple[list[ResultItem], list[ErrorBody]]:
    """An answer's (data, errors). A 2xx answer may be a bare list of items, a refusal a bare
    list of errors; a failed item inside `data` ({status: error, error: {...}}) is an error of
    its task; an {error: {...}, taskUUID} envelope lends the error its taskUUID."""
    data: Any = []
    found: Any = []
    if isinstance(body, list):
        data, found = (body, []) if 200 <= status < 300 else ([], body)
    elif isinstance(body, dict):
        data = body.get("data", [])
        found = body.get("errors") or body.get("error") or []
        if isinstance(found, dict) and "taskUUID" in body:
            found = {"taskUUID": body["taskUUID"], **found}
        if isinstance(found, dict):
            found = [found]
    # JSON objects from Runware: each is read field by field, checked where it is used
    items = cast(
        list[ResultItem], [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
    )
    errors = cast(
        list[ErrorBody],
        [e for e in found if isinstance(e, dict)] if isinstance(found, list) else [],
    )
    for item in items:
        if item.get("status") == "error":
            nested = item.get("error")
            own: ErrorBody = nested if isinstance(nested, dict) else {}
            errors.append({**own, "taskUUID": item.get("taskUUID") or own.get("taskUUID")})
    return [d for d in items if d.get("status") != "error"], errors


class RunwareClient:
    """Submits tasks and polls results; never holds a connection open for a generation."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        if settings.runware_api_key is None:
            raise ConfigurationError("FLUXFARM_RUNWARE_API_KEY", "must be set to reach Runware")
        self._url = settings.runware_url
        self._api_key = settings.runware_api_key
        self._http = httpx.Client(
            timeout=httpx.Timeout(settings.submit_timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def submit(self, task: InferenceTask) -> list[ResultItem]:
        """POST one task; returns the acknowledgement's data items.

        Raises TransientProviderError (retry with the same taskUUID) or
        PermanentProviderError (fail the job). `conflictTaskUUID` counts as accepted.
        """
        batch = self.submit_batch([task])
        failure = batch.failures.get(task["taskUUID"])
        if failure is not None:
            raise failure
        return batch.data

    def submit_batch(self, tasks: list[InferenceTask]) -> SubmittedBatch:
        """POST several tasks in one request; each task's outcome is judged on its own.

        Items are matched by taskUUID, never by position. A task the answer leaves in doubt
        (a failed status while only other tasks were named in errors) is transient: resent
        with the same taskUUID, Runware answers `conflictTaskUUID` if it had accepted it.
        """
        try:
            answer = self._post(tasks)
        except _Unanswered as exc:
            return SubmittedBatch({t["taskUUID"]: exc.failure(t["taskUUID"]) for t in tasks}, [])
        failures: dict[str, ProviderError] = {}
        for task in tasks:
            task_uuid = task["taskUUID"]
            exchange = answer.for_task(task_uuid)
            if any(e.get("code") == ALREADY_ACCEPTED for e in exchange.errors):
                continue
            if exchange.errors or (exchange.status >= 400 and not answer.names_others(task_uuid)):
                failures[task_uuid] = exchange.failure(task_uuid)
            elif exchange.status >= 400:
                failures[task_uuid] = TransientProviderError(
                    task_uuid,
                    reason_for_code(None, exchange.status),
                    f"HTTP {exchange.status} named only other tasks of the request",
                    http_status=exchange.status,
                    retry_after=exchange.retry_after,
                )
        return SubmittedBatch(failures, answer.data)

    def get_response(self, task_uuid: str) -> Exchange:
        """The cumulative state of every generation of a task (getResponse).

        Runware's answer for a task it does not know comes back as the exchange's errors;
        only failures to ask at all are raised.
        """
        try:
            poll: GetResponseTask = {"taskType": "getResponse", "taskUUID": task_uuid}
            answer = self._post([poll])
        except _Unanswered as exc:
            raise exc.failure(task_uuid) from exc.__cause__
        exchange = answer.for_task(task_uuid)
        if exchange.transient or exchange.status in (401, 402, 403):
            raise exchange.failure(task_uuid)
        return exchange

    def _post(self, tasks: list[InferenceTask] | list[GetResponseTask]) -> Exchange:
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Content-Type": "application/json",
        }
        inference = tasks[0].get("taskType") == "imageInference"
        started = time.perf_counter()
        try:
            response = self._http.post(self._url, content=orjson.dumps(tasks), headers=headers)
        except httpx.TimeoutException as exc:
            instrumentation.provider_request(inference, "timeout", started)
            raise _Unanswered(
                FailureReason.TIMEOUT, f"no answer in time ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            instrumentation.provider_request(inference, "error", started)
            raise _Unanswered(
                FailureReason.SERVER, f"connection failed ({type(exc).__name__})"
            ) from exc
        instrumentation.provider_request(inference, str(response.status_code), started)
        try:
            body = orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            body = {}
        data, errors = _items(body, response.status_code)
        return Exchange(response.status_code, data, errors, _retry_after(response))


class _Unanswered(Exception):
    """The request got no HTTP answer: every task in it is in doubt."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def failure(self, task_uuid: str) -> TransientProviderError:
        failure = TransientProviderError(task_uuid, self.reason, self.detail)
        # the transport's own exception stays the cause, for the logs
        failure.__cause__ = self.__cause__
        return failure


@dataclass(frozen=True)
class SubmittedBatch:
    """One request's tasks: the failed ones by taskUUID (the rest were accepted), and the
    acknowledgement's data items."""

    failures: dict[str, ProviderError]
    data: list[ResultItem]


@dataclass(frozen=True)
class Exchange:
    """One answered POST: its status and items, for every task it carried or, narrowed by
    `for_task`, for one of them."""

    status: int
    data: list[ResultItem]
    errors: list[ErrorBody]
    retry_after: float | None

    def for_task(self, task_uuid: str) -> Exchange:
        """The items that concern `task_uuid`: its own errors and those naming no task."""
        errors = [e for e in self.errors if e.get("taskUUID") in (task_uuid, None)]
        return Exchange(self.status, self.data, errors, self.retry_after)

    def names_others(self, task_uuid: str) -> bool:
        return any(e.get("taskUUID") not in (task_uuid, None) for e in self.errors)

    @property
    def transient(self) -> bool:
        return self.status in (408, 429) or self.status >= 500

    def failure(self, task_uuid: str) -> ProviderError:
        first = self.errors[0] if self.errors else {}
        # Runware's own words, kept for the operator: escaped, so they print as one line
        code = escaped(first["code"]) if isinstance(first.get("code"), str) else None
        message = escaped(str(first.get("message") or f"HTTP {self.status}")[:2000])
        parameter = first_parameter(first.get("parameter"))
        parameter = escaped(parameter) if parameter is not None else None
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
