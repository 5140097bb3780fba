"""Runware result bodies (webhook or getResponse) parsed into the store's values.

Both webhook shapes are accepted: a flat item, or an envelope with `data` and/or
`errors` arrays. Items in `processing` state carry nothing to record and are skipped.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from farmdomain.errors import WebhookRejected
from farmdomain.text import REFUSED, escaped, has_control
from farmdomain.values import IncomingResult, ParsedBody, ResultError
from runware_edge.codes import reason_for_code

_IMAGE_FIELDS = ("imageURL", "imageBase64Data", "imageDataURI")


def _malformed(message: str) -> WebhookRejected:
    return WebhookRejected("malformed", 400, message)


def _required(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise _malformed(f"{key} must be a non-empty string")
    if has_control(value):
        raise _malformed(f"{key} {REFUSED}")
    return value


def _optional(item: dict[str, Any], key: str) -> str | None:
    return None if item.get(key) is None else _required(item, key)


def first_parameter(value: Any) -> str | None:
    """The parameter an error names; a cross-field rule names a list of them, read as its
    first, as runware-sdk does."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


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
    parameter = first_parameter(source.get("parameter"))
    code = code if isinstance(code, str) else "unknownError"
    # Runware's own words, kept for the operator: escaped, so they print as one line
    return ResultError(
        task_uuid=task_uuid,
        reason=reason_for_code(code),
        code=escaped(code),
        message=escaped(message[:2000]) if isinstance(message, str) else "no message",
        parameter=None if parameter is None else escaped(parameter),
    )


def item_count(body: Any) -> int:
    """How many items a decoded body carries, before any of them is parsed."""
    if isinstance(body, list):
        return len(body)
    if isinstance(body, dict) and ("data" in body or "errors" in body):
        return sum(
            len(part) for part in (body.get("data"), body.get("errors")) if isinstance(part, list)
        )
    return 1


def parse_body(body: Any) -> ParsedBody:
    """Every result and error in a Runware body; raises WebhookRejected if malformed."""
    if isinstance(body, list):
        # a bare list of items, as a 2xx answer may be; empty, it names no task at all
        if not body:
            raise _malformed("an array body must carry items")
        body = {"data": body}
    if not isinstance(body, dict):
        raise _malformed("body must be a JSON object or array")
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
