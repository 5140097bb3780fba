"""The webhook receiver: authenticates Runware's result POSTs and records them, once.

Anything forged or malformed is answered 4xx before the store is touched. Duplicates
and late deliveries are answered 2xx, so Runware stops retrying them, and change nothing.
"""

from __future__ import annotations

import time

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from core import metrics
from core.errors import StoreUnavailable, WebhookRejected
from core.records import ResultOutcome
from worker import instrumentation
from worker.context import ProcessContext
from worker.results import parse_body
from worker.tokens import verify

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/webhooks/runware/{task_uuid}"
STORE_UNAVAILABLE = "store_unavailable"


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise WebhookRejected("too_large", 413, f"body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise WebhookRejected("too_large", 413, f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_result(request: Request) -> Response:
    context: ProcessContext = request.app.state.context
    task_uuid = request.path_params["task_uuid"]
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(task_uuid=task_uuid):
        try:
            outcomes = await _handle(request, context, task_uuid)
        except WebhookRejected as exc:
            log.warning("webhook.rejected", outcome=exc.outcome, reason=str(exc))
            metrics.metrics().requests_rejected.labels("webhook", exc.outcome).inc()
            instrumentation.webhook_handled([exc.outcome], started)
            body = {"error": {"outcome": exc.outcome, "message": str(exc)}}
            return JSONResponse(body, status_code=exc.status_code)
        except StoreUnavailable as exc:
            # nothing was recorded: Runware delivers again, and recording is idempotent
            log.warning("webhook.store_unavailable", reason=str(exc))
            instrumentation.webhook_handled([STORE_UNAVAILABLE], started)
            body = {"error": {"outcome": STORE_UNAVAILABLE, "message": str(exc)}}
            return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
        instrumentation.webhook_handled(outcomes, started)
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        log.info("webhook.received", outcomes=outcomes, duration_ms=duration_ms)
    if ResultOutcome.UNKNOWN_TASK in outcomes:
        body = {"error": {"outcome": "unknown_task", "message": "no job has this taskUUID"}}
        return JSONResponse(body, status_code=404)
    return JSONResponse({"outcomes": outcomes})


async def _handle(request: Request, context: ProcessContext, task_uuid: str) -> list[str]:
    token = request.query_params.get("token", "")
    if not verify(task_uuid, token, context.webhook_secrets):
        raise WebhookRejected("bad_token", 401, "webhook token is missing or wrong")
    raw = await _read_limited(request, context.settings.webhook_max_body_bytes)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise WebhookRejected("malformed", 400, "body is not valid JSON") from exc
    parsed = parse_body(payload)
    if parsed.task_uuids - {task_uuid}:
        raise WebhookRejected("bad_token", 403, "body names a task this token does not cover")
    outcomes = await context.webhook_recorder.record(parsed)
    return [str(o) for o in outcomes]


routes = [Route(WEBHOOK_PATH, receive_result, methods=["POST"], name="runware_webhook")]


class WebhooksFirst:
    """ASGI middleware serving the webhook routes itself, ahead of the app it wraps.

    Deliveries come one per image and need none of the job API's middleware (its limits
    and tokens are the API's own; the receiver checks its own token and body size), so
    they skip that stack and its cost per request. Anything else goes on to `app`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await self.app(scope, receive, send)
