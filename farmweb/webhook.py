"""The webhook receiver: authenticates Runware's result POSTs and records them, once.

Anything forged or malformed is answered 4xx before the store is touched. Duplicates
and late deliveries are answered 2xx, so Runware stops retrying them, and change nothing.

It is a plain ASGI app in front of the job API. Deliveries come one per image, at the
farm's full rate, and need none of the API's routing, request objects, middleware, limits
or tokens (the receiver checks its own token and body size); going through that stack
cost `web` measurably more CPU per delivery (README, Performance).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qsl

import orjson
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from farmdomain import metrics
from farmdomain.errors import WebhookRejected
from farmdomain.values import BodyRecorded, ResultOutcome
from farmweb import outage
from farmweb.context import WebContext
from runware_edge.bodies import item_count, parse_body
from runware_edge.tokens import verify

log = structlog.get_logger(__name__)

WEBHOOK_PREFIX = "/webhooks/runware/"
STORE_UNAVAILABLE = "store_unavailable"
TOO_LARGE = "too_large"
TOO_MANY_ITEMS = "too_many_items"
# every item names its task: counted in the raw bytes, a body of many items is refused
# before it is decoded (a key written with escapes slips past, to the count after decoding)
_ITEM_MARK = b'"taskUUID"'
SLOW_BODY = "slow_body"


def _answer_doc(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {}}}


# The receiver answers ahead of the job API's routing and middleware (it is the hot path),
# so FastAPI does not see it as a route; this documents it in the app's OpenAPI instead.
OPENAPI_PATHS: dict[str, Any] = {
    WEBHOOK_PREFIX + "{taskUUID}": {
        "post": {
            "operationId": "receiveRunwareResult",
            "summary": "Runware's result delivery for one task (called by Runware, not by you)",
            "tags": ["runware"],
            "parameters": [
                {"name": "taskUUID", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "token",
                    "in": "query",
                    "required": True,
                    "description": "HMAC-SHA256 of the taskUUID under the webhook secret.",
                    "schema": {"type": "string"},
                },
            ],
            "requestBody": {
                "required": True,
                "description": "A result item, or an envelope with `data` and/or `errors`.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": _answer_doc("Recorded (or a duplicate or late result): an outcome each."),
                "400": _answer_doc("The body is not JSON or not a Runware body."),
                "401": _answer_doc(
                    "The token is missing or wrong, or expired after the job finished."
                ),
                "403": _answer_doc("The body names a task this token does not cover."),
                "404": _answer_doc("No job has this taskUUID."),
                "409": _answer_doc("The body would give the job more images than it asked for."),
                "422": _answer_doc(
                    "A claim the farm does not believe: an image URL off the download"
                    " allow-list, inline data larger than the request's size or of another"
                    " format."
                ),
                "405": _answer_doc("Only POST is answered."),
                "408": _answer_doc("The body was not sent within the body timeout."),
                "413": _answer_doc("The body is over the size or item limit."),
                "503": _answer_doc("The store cannot be reached; Runware delivers again."),
            },
        }
    }
}


class _ClientLeft(Exception):
    """The client disconnected before its body arrived: there is no one left to answer."""


class WebhookReceiver:
    """Serves POST WEBHOOK_PREFIX<taskUUID>?token=... itself and hands every other request,
    lifespan events included, to `app`."""

    def __init__(self, context: WebContext, app: ASGIApp) -> None:
        self.context = context
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task_uuid = task_in_path(scope) if scope["type"] == "http" else None
        if task_uuid is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            error = {"error": {"outcome": "method_not_allowed", "message": "only POST"}}
            await _send_json(send, 405, error, [(b"allow", b"POST")])
            return
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(task_uuid=task_uuid):
            try:
                status, body, headers = await self._answer(task_uuid, scope, receive, started)
            except _ClientLeft:
                return
        await _send_json(send, status, body, headers)

    async def _answer(
        self, task_uuid: str, scope: Scope, receive: Receive, started: float
    ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        try:
            recorded = await self._record(task_uuid, scope, receive)
        except WebhookRejected as exc:
            log.warning("webhook.rejected", outcome=exc.outcome, reason=str(exc))
            metrics.metrics().requests_rejected.labels("webhook", exc.outcome).inc()
            _handled([exc.outcome], started)
            body = {"error": {"outcome": exc.outcome, "message": str(exc)}}
            # the unread rest of a cut-off body would otherwise be taken as the next request
            unread = exc.outcome in (TOO_LARGE, TOO_MANY_ITEMS, SLOW_BODY)
            return exc.status_code, body, [(b"connection", b"close")] if unread else []
        except outage.STORE_DOWN as exc:
            # nothing was recorded: Runware delivers again, and recording is idempotent
            reason = str(outage.unavailable(exc))
            log.warning("webhook.store_unavailable", reason=reason)
            _handled([STORE_UNAVAILABLE], started)
            body = {"error": {"outcome": STORE_UNAVAILABLE, "message": reason}}
            return 503, body, [(b"retry-after", str(outage.RETRY_AFTER_S).encode())]
        outcomes = [str(o) for o in recorded.outcomes]
        _handled(outcomes, started)
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        log.info(
            "webhook.received", job_id=recorded.job_id, outcomes=outcomes, duration_ms=duration_ms
        )
        if ResultOutcome.UNKNOWN_TASK in outcomes:
            body = {"error": {"outcome": "unknown_task", "message": "no job has this taskUUID"}}
            return 404, body, []
        if ResultOutcome.TOO_MANY_IMAGES in outcomes:
            # a delivery racing another for the job's last places: the store kept the count
            outcome = ResultOutcome.TOO_MANY_IMAGES.value
            metrics.metrics().requests_rejected.labels("webhook", outcome).inc()
            message = "the job has all the images it asked for"
            return 409, {"error": {"outcome": outcome, "message": message}}, []
        return 200, {"outcomes": outcomes}, []

    async def _record(self, task_uuid: str, scope: Scope, receive: Receive) -> BodyRecorded:
        context = self.context
        if not verify(task_uuid, _query_value(scope, "token"), context.webhook_secrets):
            raise WebhookRejected("bad_token", 401, "webhook token is missing or wrong")
        settings = context.settings
        try:
            async with asyncio.timeout(settings.webhook_body_timeout_s):
                raw = await _read_limited(scope, receive, settings.webhook_max_body_bytes)
        except TimeoutError as exc:
            timeout = settings.webhook_body_timeout_s
            raise WebhookRejected(SLOW_BODY, 408, f"body not sent within {timeout:g}s") from exc
        too_many = WebhookRejected(
            TOO_MANY_ITEMS, 413, f"body carries over {settings.webhook_max_items} items"
        )
        if raw.count(_ITEM_MARK) > settings.webhook_max_items:
            raise too_many
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise WebhookRejected("malformed", 400, "body is not valid JSON") from exc
        if item_count(payload) > settings.webhook_max_items:
            raise too_many
        parsed = parse_body(payload)
        if parsed.task_uuids - {task_uuid}:
            raise WebhookRejected("bad_token", 403, "body names a task this token does not cover")
        return await context.webhook_recorder.record(parsed)


def task_in_path(scope: Scope) -> str | None:
    """The taskUUID a webhook path names, or None if the path is not a webhook's. The
    path is taken below the app's root path, as a proxy mounting the farm passes it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        path = path[len(root) :]
    if not path.startswith(WEBHOOK_PREFIX):
        return None
    task_uuid = path[len(WEBHOOK_PREFIX) :]
    return task_uuid if task_uuid and "/" not in task_uuid else None


def _query_value(scope: Scope, name: str) -> str:
    """The last value of query parameter `name`, or "" if absent."""
    found = ""
    for key, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
        if key == name:
            found = value
    return found


def _declared_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _read_limited(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = _declared_length(scope)
    if declared is not None and declared > limit:
        raise WebhookRejected(TOO_LARGE, 413, f"body over {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientLeft
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise WebhookRejected(TOO_LARGE, 413, f"body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    content = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})


def _handled(outcomes: list[str], started: float) -> None:
    """One webhook delivery: an outcome per item it carried, or its rejection."""
    m = metrics.metrics()
    for outcome in outcomes:
        m.webhooks_received.labels(outcome).inc()
    m.webhook_handling.observe(time.perf_counter() - started)
