"""The /v1 envelope: reading a bounded body, parsing the task array, authenticating, responding.

The task array, the key check and the error shapes are the same on a WebSocket message."""

from __future__ import annotations

import hmac
import json
from typing import Any, TypeGuard

import orjson
from starlette.requests import Request
from starlette.responses import Response

from simulator.errors import ErrorDict, RequestRejected, api_error

AUTH_TASK = "authentication"


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, errors: list[ErrorDict]) -> JSONResponse:
    return JSONResponse({"errors": errors}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> RequestRejected:
    return RequestRejected.single(
        413, "payloadTooLarge", f"The request body exceeds {limit} bytes."
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses integers beyond 64 bits; those must reach validation as bad values.
        return json.loads(body, parse_constant=_reject_constant)


def parse_tasks(content_type: str, body: bytes) -> list[dict[str, Any]]:
    """The task array of a /v1 request, or RequestRejected saying what is wrong with it."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise RequestRejected.single(
            415, "invalidContentType", "Content-Type must be application/json."
        )
    return parse_task_array(body)


def parse_task_array(body: bytes) -> list[dict[str, Any]]:
    """A JSON array of task objects, or RequestRejected saying what is wrong with it."""
    try:
        payload = _loads(body)
    except (ValueError, RecursionError) as exc:
        raise RequestRejected.single(
            400, "invalidRequestBody", "The request body is not valid JSON."
        ) from exc
    if not isinstance(payload, list):
        raise RequestRejected.single(
            400, "invalidRequestBody", "The request body must be a JSON array of tasks."
        )
    if not payload:
        raise RequestRejected.single(400, "invalidRequestBody", "The task array is empty.")
    if not all(isinstance(task, dict) for task in payload):
        raise RequestRejected.single(
            400, "invalidRequestBody", "Every element of the task array must be an object."
        )
    return payload


def key_is_valid(key: Any, valid_keys: tuple[str, ...]) -> TypeGuard[str]:
    """Whether `key` is one of the configured keys, compared in constant time."""
    if not isinstance(key, str):
        return False
    presented = key.encode()
    return any(hmac.compare_digest(presented, valid.encode()) for valid in valid_keys)


def key_label(key: str, valid_keys: tuple[str, ...]) -> str:
    """How stats name a valid key: its position among the configured keys, from 1, so the
    key itself never appears in an answer."""
    return str(valid_keys.index(key) + 1)


def authenticate(
    authorization: str, tasks: list[dict[str, Any]], valid_keys: tuple[str, ...]
) -> tuple[str, list[dict[str, Any]]]:
    """Check the leading authentication task or else the Bearer header; return the key's
    label (key_label) and the other tasks."""
    if tasks[0].get("taskType") == AUTH_TASK:
        key = tasks[0].get("apiKey")
        tasks = tasks[1:]
    else:
        scheme, _, token = authorization.partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    if not key_is_valid(key, valid_keys):
        raise invalid_key()
    return key_label(key, valid_keys), tasks


def invalid_key() -> RequestRejected:
    return RequestRejected.single(
        401,
        "invalidApiKey",
        "Invalid API key. Get one at https://my.runware.ai/signup",
        parameter="apiKey",
        task_type=AUTH_TASK,
    )


def envelope(data: list[dict[str, Any]], errors: list[ErrorDict], all_failed: bool) -> Any:
    """Success carries `data`; total failure only `errors`; a partial failure both."""
    if all_failed:
        return {"errors": errors}
    if errors:
        return {"data": data, "errors": errors}
    return {"data": data}


def task_error(code: str, message: str, task: dict[str, Any], **fields: Any) -> ErrorDict:
    """An error scoped to one task of the request, matched by its taskUUID."""
    task_type = task.get("taskType")
    return api_error(
        code,
        message,
        task_type=task_type if isinstance(task_type, str) else None,
        task_uuid=task.get("taskUUID"),
        **fields,
    )
