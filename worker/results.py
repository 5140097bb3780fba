"""Runware result bodies (webhook or getResponse) turned into store records.

Both webhook shapes are accepted: a flat item, or an envelope with `data` and/or
`errors` arrays. Items in `processing` state carry nothing to record and are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from core.errors import WebhookRejected
from core.recording import Recorded
from core.records import Failure, IncomingResult, ResultOutcome
from core.store import JobStore
from worker.runware import reason_for_code

_IMAGE_FIELDS = ("imageURL", "imageBase64Data", "imageDataURI")


@dataclass(frozen=True)
class ResultError:
    """An item Runware reported as failed."""

    task_uuid: str
    code: str
    message: str
    parameter: str | None


@dataclass(frozen=True)
class ParsedBody:
    results: list[IncomingResult]
    errors: list[ResultError]
    task_uuids: set[str]


@dataclass(frozen=True)
class BodyRecorded:
    """What applying one body did: an outcome per item, results first, and the job of its
    task (None if no job has it, or the body carried nothing to record)."""

    outcomes: list[ResultOutcome]
    job_id: str | None


def _malformed(message: str) -> WebhookRejected:
    return WebhookRejected("malformed", 400, message)


def _required(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise _malformed(f"{key} must be a non-empty string")
    return value


def _optional(item: dict[str, Any], key: str) -> str | None:
    return None if item.get(key) is None else _required(item, key)


def _result(item: dict[str, Any]) -> IncomingResult:
    task_uuid = _required(item, "taskUUID")
    image_uuid = _required(item, "imageUUID")
    if len(image_uuid) > 64:
        raise _malformed("imageUUID is too long")
    seed = item.get("seed")
    if seed is not None and (type(seed) is not int or not 0 <= seed < 2**63):
        raise _malformed("seed must be an integer in 0..2**63-1")
    cost = item.get("cost")
    if cost is not None and (type(cost) not in (int, float) or not 0 <= cost < 1_000_000):
        raise _malformed("cost must be a number of USD in 0..1e6")
    nsfw = item.get("NSFWContent")
    if nsfw is not None and type(nsfw) is not bool:
        raise _malformed("NSFWContent must be a boolean")
    url = _optional(item, "imageURL")
    inline = _optional(item, "imageBase64Data") or _optional(item, "imageDataURI")
    if url is None and inline is None:
        raise _malformed("a result carries imageURL, imageBase64Data or imageDataURI")
    try:
        cost_usd = None if cost is None else Decimal(str(cost))
    except InvalidOperation as exc:
        raise _malformed("cost is not a number") from exc
    return IncomingResult(
        task_uuid=task_uuid,
        image_uuid=image_uuid,
        image_url=url,
        image_data=inline,
        seed=seed,
        cost_usd=cost_usd,
        nsfw=nsfw,
    )


def _error(item: dict[str, Any]) -> ResultError:
    nested = item.get("error")
    source = nested if isinstance(nested, dict) else item
    task_uuid = _optional(item, "taskUUID") or _required(source, "taskUUID")
    code = source.get("code")
    message = source.get("message")
    parameter = source.get("parameter")
    return ResultError(
        task_uuid=task_uuid,
        code=code if isinstance(code, str) else "unknownError",
        message=message[:2000] if isinstance(message, str) else "no message",
        parameter=parameter if isinstance(parameter, str) else None,
    )


def parse_body(body: Any) -> ParsedBody:
    """Every result and error in a Runware body; raises WebhookRejected if malformed."""
    if not isinstance(body, dict):
        raise _malformed("body must be a JSON object")
    if "data" in body or "errors" in body:
        data, errors = body.get("data", []), body.get("errors", [])
        if not isinstance(data, list) or not isinstance(errors, list):
            raise _malformed("data and errors must be arrays")
        items, error_items = data, errors
    else:
        items, error_items = [body], []
    parsed = ParsedBody([], [], set())
    for item in items:
        if not isinstance(item, dict):
            raise _malformed("every item must be an object")
        status = item.get("status")
        if status == "error" or "error" in item:
            parsed.errors.append(_error(item))
        elif (
            any(key in item for key in _IMAGE_FIELDS)
            or status == "success"
            # a plain item naming an image is a result, and one without its image is malformed
            or (status is None and "imageUUID" in item)
        ):
            parsed.results.append(_result(item))
        else:
            # an acknowledgement or a generation still processing: nothing to record yet
            parsed.task_uuids.add(_required(item, "taskUUID"))
    for item in error_items:
        if not isinstance(item, dict):
            raise _malformed("every error must be an object")
        parsed.errors.append(_error(item))
    parsed.task_uuids.update(r.task_uuid for r in parsed.results)
    parsed.task_uuids.update(e.task_uuid for e in parsed.errors)
    return parsed


def record(store: JobStore, parsed: ParsedBody, source: str) -> BodyRecorded:
    """Apply a parsed body to the store: results once each, error items fail their job."""
    [recorded] = record_many(store, [parsed], source)
    return recorded


def record_many(store: JobStore, bodies: Sequence[ParsedBody], source: str) -> list[BodyRecorded]:
    """`record` for several bodies: all their results in one store call, then their error
    items; what each body did."""
    incoming = [result for body in bodies for result in body.results]
    recorded = iter(store.record_results(incoming, source))
    found = []
    for body in bodies:
        own = [next(recorded) for _ in body.results]
        own += [_record_error(store, error) for error in body.errors]
        job_id = next((r.job_id for r in own if r.job_id is not None), None)
        found.append(BodyRecorded([r.outcome for r in own], job_id))
    return found


def _record_error(store: JobStore, error: ResultError) -> Recorded:
    job_id = store.job_id_for_task(error.task_uuid)
    if job_id is None:
        return Recorded(ResultOutcome.UNKNOWN_TASK)
    failure = Failure(
        reason=reason_for_code(error.code),
        message=error.message,
        code=error.code,
        parameter=error.parameter,
    )
    failed = store.fail(job_id, failure)
    return Recorded(ResultOutcome.ACCEPTED if failed else ResultOutcome.LATE, job_id)
