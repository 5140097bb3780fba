"""The ASGI app: /v1 task dispatch, hosted images, the /_sim control routes, and the factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.delivery import Deliverer
from simulator.envelope import (
    JSONResponse,
    authenticate,
    envelope,
    error_response,
    parse_tasks,
    read_body,
    task_error,
)
from simulator.errors import ErrorDict, RequestRejected, api_error
from simulator.faults import HANG, FaultController
from simulator.images import ImageRenderer, ImageStore
from simulator.settings import SimulatorSettings
from simulator.stats import Stats
from simulator.tasks import Task, TaskRegistry
from simulator.transport import StreamTransport
from simulator.validation import TASK_TYPE, is_uuid4, validate_image_task

SWEEP_INTERVAL_S = 0.5
LOOKUP_KEYS = frozenset({"taskType", "taskUUID"})
LOOKUPS = frozenset({"getResponse", "getTaskDetails"})


class Simulator:
    """Everything one app instance owns; handlers reach it through `app.state.simulator`."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        rng = random.Random(settings.random_seed)
        self.stats = Stats()
        self.faults = FaultController(settings.faults, rng)
        self.store = ImageStore()
        self.client = httpx.AsyncClient(
            transport=StreamTransport(settings.http_pool_size),
            timeout=httpx.Timeout(settings.webhook_timeout_s),
        )
        deliverer = Deliverer(self.client, settings, self.faults, rng, self.stats)
        renderer = ImageRenderer(settings.image_cache_size, settings.fast_images)
        self.registry = TaskRegistry(
            settings, self.faults, renderer, self.store, deliverer, self.stats, rng
        )

    async def submit(self, request: Request) -> Response:
        self.stats.requests += 1
        try:
            body = await read_body(request, self.settings.max_body_bytes)
            tasks = parse_tasks(request.headers.get("content-type", ""), body)
            tasks = authenticate(
                request.headers.get("authorization", ""), tasks, self.settings.api_keys
            )
            if len(tasks) > self.settings.max_tasks_per_request:
                raise RequestRejected.single(
                    400,
                    "maxTasksPerRequestExceeded",
                    f"At most {self.settings.max_tasks_per_request} tasks per request.",
                )
            base_url = self.settings.public_base_url or str(request.base_url)
            status, content = await self.dispatch(tasks, base_url)
        except RequestRejected as rejected:
            self.stats.submits_rejected.update(error["code"] for error in rejected.errors)
            return error_response(rejected.status, rejected.errors)
        return JSONResponse(content, status_code=status)

    async def dispatch(self, tasks: list[dict[str, Any]], base_url: str) -> tuple[int, Any]:
        """Run every task of one request; return the HTTP status and the response envelope."""
        image_tasks = [task for task in tasks if task.get("taskType") == TASK_TYPE]
        if image_tasks:
            await self._refuse_on_submit_fault(image_tasks)
        data: list[dict[str, Any]] = []
        errors: list[ErrorDict] = []
        failure_statuses: list[int] = []
        accepted: list[Task] = []
        in_request: set[str] = set()
        for task in tasks:
            task_type = task.get("taskType")
            if task_type == TASK_TYPE:
                status, task_errors = self._accept(task, base_url, in_request, accepted, data)
            elif task_type == "getResponse":
                status, task_errors = self._lookup(task, data, errors, details=False)
            elif task_type == "getTaskDetails":
                status, task_errors = self._lookup(task, data, errors, details=True)
            else:
                status = 400
                task_errors = [
                    task_error(
                        "unsupportedTaskType",
                        f"Task type {task_type!r} is not supported.",
                        task,
                        parameter="taskType",
                    )
                ]
            if task_errors:
                if task_type not in LOOKUPS:
                    self.stats.submits_rejected.update(error["code"] for error in task_errors)
                errors.extend(task_errors)
                failure_statuses.append(status)
        if accepted:
            await self._answer_badly_if_faulted(accepted)
            failure_statuses += await self._collect_sync(accepted, data, errors)
        if failure_statuses and len(failure_statuses) == len(tasks):
            return failure_statuses[0], envelope(data, errors, all_failed=True)
        status = self.settings.partial_failure_status if errors else 200
        return status, envelope(data, errors, all_failed=False)

    async def _refuse_on_submit_fault(self, image_tasks: list[dict[str, Any]]) -> None:
        fault = self.faults.submit_fault()
        if fault is None:
            return
        if fault is HANG:
            await asyncio.sleep(self.faults.current.hang_s)
        raise RequestRejected(
            fault.status, [task_error(fault.code, fault.message, task) for task in image_tasks]
        )

    def _accept(
        self,
        task: dict[str, Any],
        base_url: str,
        in_request: set[str],
        accepted: list[Task],
        data: list[dict[str, Any]],
    ) -> tuple[int, list[ErrorDict]]:
        request, task_errors = validate_image_task(
            task, require_dimensions=self.settings.require_dimensions
        )
        task_uuid = task.get("taskUUID")
        if (
            isinstance(task_uuid, str)
            and is_uuid4(task_uuid)
            and (self.registry.is_known(task_uuid) or task_uuid in in_request)
        ):
            request = None
            task_errors.append(
                task_error(
                    "conflictTaskUUID",
                    "A task with this taskUUID was already submitted.",
                    task,
                    parameter="taskUUID",
                )
            )
        if request is None:
            return 400, task_errors
        in_request.add(request.task_uuid)
        accepted.append(self.registry.accept(request, task, base_url))
        if request.acknowledged_at_once and self.settings.ack_body == "echo":
            data.append({"taskType": TASK_TYPE, "taskUUID": request.task_uuid})
        return 200, []

    def _lookup(
        self,
        task: dict[str, Any],
        data: list[dict[str, Any]],
        errors: list[ErrorDict],
        *,
        details: bool,
    ) -> tuple[int, list[ErrorDict]]:
        task_errors = [
            task_error("unknownParameter", f"Unknown parameter '{key}'.", task, parameter=key)
            for key in task
            if key not in LOOKUP_KEYS
        ]
        task_uuid = task.get("taskUUID")
        if not isinstance(task_uuid, str):
            task_errors.append(
                task_error("missingParameter", "Missing 'taskUUID'.", task, parameter="taskUUID")
            )
        found = self.registry.get(task_uuid) if isinstance(task_uuid, str) else None
        if found is None and not task_errors:
            task_errors.append(
                task_error(
                    "taskNotFound",
                    "No task with this taskUUID exists or it has expired.",
                    task,
                    parameter="taskUUID",
                )
            )
        if task_errors or found is None:
            return 400, task_errors
        if details:
            items, failures = found.results()
            data.append(
                {
                    "taskType": "getTaskDetails",
                    "taskUUID": task_uuid,
                    "request": [found.original],
                    "response": envelope(items, failures, all_failed=not items and bool(failures)),
                }
            )
        else:
            items, failures = found.poll()
            data.extend(items)
            errors.extend(failures)
        return 200, []

    async def _answer_badly_if_faulted(self, accepted: list[Task]) -> None:
        """The ambiguous case: the tasks run and are billed, yet the client hears failure."""
        mode = self.faults.accepted_error_mode()
        if mode is None:
            return
        if mode == "hang":
            await asyncio.sleep(self.faults.current.hang_s)
        raise RequestRejected(
            500,
            [
                api_error(
                    "internalServerError",
                    "Internal server error.",
                    task_type=TASK_TYPE,
                    task_uuid=task.request.task_uuid,
                )
                for task in accepted
            ],
        )

    async def _collect_sync(
        self, accepted: list[Task], data: list[dict[str, Any]], errors: list[ErrorDict]
    ) -> list[int]:
        """Hold the request until the sync tasks finish; return one status per failed task."""
        waiting = [task for task in accepted if not task.request.acknowledged_at_once]
        if not waiting:
            return []
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(task.done.wait() for task in waiting)),
                self.settings.sync_timeout_s,
            )
        statuses = []
        for task in waiting:
            if task.remaining:
                statuses.append(504)
                errors.append(
                    api_error(
                        "requestTimeout",
                        "The task did not finish in time; it keeps running.",
                        task_type=TASK_TYPE,
                        task_uuid=task.request.task_uuid,
                    )
                )
                continue
            items, failures = task.results()
            data.extend(items)
            errors.extend(failures)
            if not items:
                statuses.append(504 if failures[0]["code"] == "timeoutProvider" else 400)
        return statuses


def _simulator(request: Request) -> Simulator:
    simulator: Simulator = request.app.state.simulator
    return simulator


async def submit(request: Request) -> Response:
    return await _simulator(request).submit(request)


async def image(request: Request) -> Response:
    image_uuid = request.path_params["name"].split(".", 1)[0]
    stored = _simulator(request).store.get(image_uuid)
    if stored is None:
        return error_response(404, [api_error("imageNotFound", "No such image, or expired.")])
    return Response(stored.data, media_type=stored.media_type)


async def faults(request: Request) -> Response:
    controller = _simulator(request).faults
    if request.method == "DELETE":
        return JSONResponse(controller.reset().as_dict())
    if request.method == "POST":
        try:
            changes = orjson.loads(await request.body())
            if not isinstance(changes, dict):
                raise ValueError("fault settings must be a JSON object")
            if changes.pop("reset", False) is True:
                controller.reset()
            controller.update(changes)
        except (ValueError, TypeError) as exc:
            return error_response(400, [api_error("invalidFaultSettings", str(exc))])
    return JSONResponse(controller.current.as_dict())


async def stats(request: Request) -> Response:
    simulator = _simulator(request)
    counters = simulator.stats.as_dict()
    counters["tasks_in_memory"] = len(simulator.registry.tasks)
    counters["images_hosted"] = len(simulator.store)
    return JSONResponse(counters)


async def task_state(request: Request) -> Response:
    task = _simulator(request).registry.get(request.path_params["task_uuid"])
    if task is None:
        return error_response(404, [api_error("taskNotFound", "No such task.")])
    return JSONResponse(task.state())


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
            Route("/image/{name}", image, methods=["GET"]),
            Route("/_sim/faults", faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/stats", stats, methods=["GET"]),
            Route("/_sim/tasks/{task_uuid}", task_state, methods=["GET"]),
            Route("/_sim/reset", reset, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.simulator = simulator
    return app
