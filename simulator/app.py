"""The ASGI app: /v1 over REST and WebSocket, hosted images, the /_sim control routes, and
the factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from simulator.envelope import JSONResponse, authenticate, error_response, parse_tasks, read_body
from simulator.errors import RequestRejected, api_error
from simulator.service import Simulator
from simulator.settings import Adjustable, SimulatorSettings
from simulator.websocket import serve_websocket

SWEEP_INTERVAL_S = 0.5


def _simulator(request: Request) -> Simulator:
    simulator: Simulator = request.app.state.simulator
    return simulator


async def submit(request: Request) -> Response:
    simulator = _simulator(request)
    simulator.stats.requests += 1
    settings = simulator.settings
    try:
        body = await read_body(request, settings.max_body_bytes)
        tasks = parse_tasks(request.headers.get("content-type", ""), body)
        key, tasks = authenticate(
            request.headers.get("authorization", ""), tasks, settings.api_keys
        )
        base_url = settings.public_base_url or str(request.base_url)
        answer = await simulator.submit(tasks, base_url, key)
        await simulator.hold(answer)
    except RequestRejected as rejected:
        simulator.count_rejected(rejected)
        return error_response(rejected.status, rejected.errors)
    status, content = answer.outcome(simulator.shapes.current.partial_failure_status)
    return JSONResponse(content, status_code=status)


async def image(request: Request) -> Response:
    image_uuid = request.path_params["name"].split(".", 1)[0]
    stored = _simulator(request).store.get(image_uuid)
    if stored is None:
        return error_response(404, [api_error("imageNotFound", "No such image, or expired.")])
    return Response(stored.data, media_type=stored.media_type)


def _adjustable_route(
    pick: Callable[[Simulator], Adjustable[Any]], error_code: str
) -> Callable[[Request], Awaitable[Response]]:
    """GET the settings in force, POST a partial update (`reset: true` first resets), DELETE
    back to the startup values."""

    async def route(request: Request) -> Response:
        controller = pick(_simulator(request))
        if request.method == "DELETE":
            return JSONResponse(controller.reset().as_dict())
        if request.method == "POST":
            try:
                changes = orjson.loads(await request.body())
                if not isinstance(changes, dict):
                    raise ValueError("settings must be a JSON object")
                if changes.pop("reset", False) is True:
                    controller.reset()
                controller.update(changes)
            except (ValueError, TypeError) as exc:
                return error_response(400, [api_error(error_code, str(exc))])
        return JSONResponse(controller.current.as_dict())

    return route


async def stats(request: Request) -> Response:
    simulator = _simulator(request)
    counters = simulator.stats.as_dict()
    counters["tasks_in_memory"] = len(simulator.registry.tasks)
    counters["images_hosted"] = len(simulator.store)
    counters["ws_sessions"] = len(simulator.sessions)
    return JSONResponse(counters)


async def task_state(request: Request) -> Response:
    task = _simulator(request).registry.get(request.path_params["task_uuid"])
    if task is None:
        return error_response(404, [api_error("taskNotFound", "No such task.")])
    return JSONResponse(task.state())


async def disconnect(request: Request) -> Response:
    """Every WebSocket closed at once, as by a network drop; sessions stay resumable."""
    dropped = await _simulator(request).sessions.drop_connections()
    return JSONResponse({"dropped": dropped})


async def reset(request: Request) -> Response:
    _simulator(request).registry.reset()
    return JSONResponse({"reset": True})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "notFound", 405: "methodNotAllowed"}.get(status, "invalidRequest")
    return error_response(status, [api_error(code, f"{request.method} {request.url.path}")])


async def server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, [api_error("internalServerError", "Internal server error.")])


async def _sweep(simulator: Simulator) -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_S)
        simulator.store.sweep()
        simulator.registry.evict_finished()
        simulator.sessions.sweep()


def create_app(settings: SimulatorSettings | None = None) -> Starlette:
    """Build the simulator app; its state lives for the app's lifespan."""
    simulator = Simulator(settings or SimulatorSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sweeper = asyncio.get_running_loop().create_task(_sweep(simulator))
        # out of the collector's full passes, which stalled deliveries for tens of ms and
        # then sent them in bursts (farmdomain/heap.py says more)
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            sweeper.cancel()
            await simulator.registry.shutdown()
            await simulator.client.aclose()

    app = Starlette(
        routes=[
            Route("/v1", submit, methods=["POST"]),
            WebSocketRoute("/v1", serve_websocket),
            Route("/image/{name}", image, methods=["GET"]),
            Route(
                "/_sim/faults",
                _adjustable_route(lambda sim: sim.faults, "invalidFaultSettings"),
                methods=["GET", "POST", "DELETE"],
            ),
            Route(
                "/_sim/shapes",
                _adjustable_route(lambda sim: sim.shapes, "invalidShapeSettings"),
                methods=["GET", "POST", "DELETE"],
            ),
            Route("/_sim/stats", stats, methods=["GET"]),
            Route("/_sim/tasks/{task_uuid}", task_state, methods=["GET"]),
            Route("/_sim/reset", reset, methods=["POST"]),
            Route("/_sim/disconnect", disconnect, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.simulator = simulator
    return app
