"""The `web` process: the job API, the Runware webhook receiver and health, in one ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from core.logs import configure_logging
from core.settings import Settings, get_settings
from producers.api import build_router, install_error_handlers
from producers.client import FluxfarmClient
from worker import webhook
from worker.context import ProcessContext


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the web app; uvicorn calls this with `--factory`."""
    settings = settings or get_settings()
    context = ProcessContext(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings, "web")
        yield
        app.state.client.close()
        context.store.engine.dispose()

    app = FastAPI(title="fluxfarm", version="0.1.0", lifespan=lifespan)
    app.state.context = context
    app.state.client = FluxfarmClient(settings, store=context.store)
    app.include_router(build_router())
    install_error_handlers(app)
    for route in webhook.routes:
        app.router.routes.append(route)
    app.add_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    return app


async def healthz(request: Request) -> JSONResponse:
    context: ProcessContext = request.app.state.context

    def ping() -> None:
        with context.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except Exception as exc:  # any failure to reach the store means "not healthy"
        return JSONResponse({"status": "unhealthy", "store": type(exc).__name__}, 503)
    return JSONResponse({"status": "ok"})
