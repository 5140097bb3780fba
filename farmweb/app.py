"""The `web` process: the job API, the Runware webhook receiver and health, in one ASGI app."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from anyio import to_thread
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from farmdomain import metrics
from farmdomain.heap import freeze_startup_heap
from farmdomain.logs import configure_logging
from farmdomain.settings import Settings
from farmweb import gauges, images, outage, spend, webhook
from farmweb.api import build_router
from farmweb.auth import ApiAuth, FoundTokens, TenantClients, auth_mode, install_auth
from farmweb.context import WebContext
from farmweb.limits import RequestLimits, buckets_for
from farmweb.ops_routes import OpsRoutes
from farmweb.refusals import install_error_handlers
from farmweb.request_ids import RequestIds
from farmweb.responses import document_headers
from farmweb.waiting import TerminalWatch, terminal_among
from jobstore.api_tokens import ApiTokenStore
from jobstore.migrations import require_current_schema
from jobstore.observer import instrument
from jobstore.store import JobStore
from producers.client import FluxfarmClient

log = structlog.get_logger(__name__)


class FarmApp(FastAPI):
    """The job API, with Runware's webhooks answered ahead of all of its machinery."""

    def __init__(self, context: WebContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state.context = context
        receiver = webhook.WebhookReceiver(context, super().__call__)
        self._serve = RequestIds(OpsRoutes(receiver, context.settings))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            schema["paths"].update(webhook.OPENAPI_PATHS)
            document_headers(schema)
        return super().openapi()


def check_web_settings(settings: Settings) -> None:
    """What `web` cannot serve without; raises ConfigurationError naming the setting."""
    auth_mode(settings)
    settings.check_webhook_secret()
    require_current_schema(settings.resolved_database_url())


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the web app for `settings` (uvicorn's `--factory` passes none: then the
    environment's); refuses settings it cannot serve with."""
    settings = settings or Settings()
    check_web_settings(settings)
    context = WebContext(settings, JobStore.from_settings(settings))
    mode = auth_mode(settings)
    rate_buckets = buckets_for(settings)
    metrics.configure(settings)
    instrument(context.store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings, "web")
        # the job API's blocking calls (store calls, most of all) run on this limiter's
        # threads and webhooks on the recorder's writers: together no more of them than
        # pooled connections, so a burst queues here instead of opening and closing a
        # PostgreSQL backend for each call
        api_threads = settings.database_pool_size - context.webhook_recorder.writers
        to_thread.current_default_thread_limiter().total_tokens = max(1, api_threads)
        freeze_startup_heap()
        log.info(
            "web.started",
            api_auth=mode,
            bind_host=settings.bind_host,
            note="open: no tokens, loopback clients only" if mode == "open" else "bearer tokens",
        )
        yield
        await rate_buckets.close()
        app.state.terminal_watch.close()
        app.state.tenant_clients.close()
        context.webhook_recorder.close()
        context.store.engine.dispose()
        metrics.process_exited(os.getpid())

    app = FarmApp(context, title="fluxfarm", version="0.1.0", lifespan=lifespan)
    app.state.client = FluxfarmClient(settings, store=context.store)
    app.state.terminal_watch = TerminalWatch(terminal_among(context.store.engine))
    tokens = ApiTokenStore(context.store.engine)
    found = FoundTokens(tokens, settings.api_token_cache_s)
    install_auth(app, ApiAuth(mode, found), TenantClients(settings, app.state.client))
    app.add_middleware(RequestLimits, settings=settings, buckets=rate_buckets)
    lifetime_s = settings.results_url_ttl_s
    # signed locally (presigned, or by farmweb.images' key): no request per image
    app.include_router(build_router(lambda key: context.results.url(key, lifetime_s)))
    app.include_router(spend.build_router())
    install_error_handlers(app)
    outage.install(app)
    app.add_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_route(images.ROUTE, images.serve_image, methods=["GET"], include_in_schema=False)
    app.state.metrics = metrics.exposition_registry(
        gauges.FarmStateCollector(
            settings,
            lambda: gauges.read_farm_state(
                context.store.engine, gauges.broker_queue_depth(settings)
            ),
        )
    )
    app.add_route("/metrics", serve_metrics, methods=["GET"], include_in_schema=False)
    return app


async def healthz(request: Request) -> JSONResponse:
    context: WebContext = request.app.state.context

    def ping() -> None:
        with context.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except outage.STORE_DOWN as exc:
        down = {"store": str(outage.unavailable(exc))}
        return JSONResponse({"status": "unhealthy", "down": down}, 503, outage.RETRY_AFTER)
    return JSONResponse({"status": "ok", "down": {}})


async def serve_metrics(request: Request) -> Response:
    # rendering reads the multiprocess files and may query the store: off the event loop
    body = await run_in_threadpool(metrics.render, request.app.state.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
