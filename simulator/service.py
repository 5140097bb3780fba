"""The simulator behind both transports: the one place where tasks are checked, faulted,
accepted, looked up and counted. REST (app.py) and WebSocket (websocket.py) only frame it."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

import httpx

from simulator.delivery import Deliverer
from simulator.envelope import envelope, task_error
from simulator.errors import ErrorDict, RequestRejected, api_error
from simulator.faults import HANG, FaultController
from simulator.images import ImageRenderer, ImageStore
from simulator.sessions import SessionStore
from simulator.settings import Adjustable, SimulatorSettings
from simulator.stats import Stats
from simulator.tasks import Task, TaskRegistry
from simulator.transport import StreamTransport
from simulator.validation import TASK_TYPE, is_uuid4, validate_image_task

LOOKUP_KEYS = frozenset({"taskType", "taskUUID"})
LOOKUPS = frozenset({"getResponse", "getTaskDetails"})


@dataclass
class Answer:
    """A request's answer so far: the items and errors to send, one status per failed task,
    and the sync tasks whose results are still to come."""

    tasks: int
    data: list[dict[str, Any]] = field(default_factory=list)
    errors: list[ErrorDict] = field(default_factory=list)
    failure_statuses: list[int] = field(default_factory=list)
    waiting: list[Task] = field(default_factory=list)

    def outcome(self, partial_failure_status: int) -> tuple[int, Any]:
        """The HTTP status and envelope: a total failure takes its first task's status."""
        if self.failure_statuses and len(self.failure_statuses) == self.tasks:
            return self.failure_statuses[0], envelope(self.data, self.errors, all_failed=True)
        status = partial_failure_status if self.errors else 200
        return status, envelope(self.data, self.errors, all_failed=False)


class Simulator:
    """Everything one app instance owns; both transports reach it through `app.state`."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        rng = random.Random(settings.random_seed)
        self.stats = Stats()
        self.faults = FaultController(settings.faults, rng)
        self.shapes = Adjustable(settings.shapes)
        self.store = ImageStore()
        self.client = httpx.AsyncClient(
            transport=StreamTransport(settings.http_pool_size),
            timeout=httpx.Timeout(settings.webhook_timeout_s),
        )
        deliverer = Deliverer(self.client, settings, self.faults, rng, self.stats)
        renderer = ImageRenderer(settings.image_cache_size, settings.fast_images)
        self.registry = TaskRegistry(
            settings, self.faults, renderer, self.store, deliverer, self.stats, rng, self.shapes
        )
        self.sessions = SessionStore(settings.ws_session_retention_s, self.stats)

    def count_rejected(self, rejected: RequestRejected) -> None:
        self.stats.submits_rejected.update(error["code"] for error in rejected.errors)

    async def submit(self, tasks: list[dict[str, Any]], base_url: str, key: str) -> Answer:
        """Run every task of one request authenticated with the key labelled `key`;
        RequestRejected fails it whole."""
        if len(tasks) > self.settings.max_tasks_per_request:
            raise RequestRejected.single(
                400,
                "maxTasksPerRequestExceeded",
                f"At most {self.settings.max_tasks_per_request} tasks per request.",
            )
        image_tasks = [task for task in tasks if task.get("taskType") == TASK_TYPE]
        if image_tasks:
            await self._refuse_on_submit_fault(image_tasks)
        answer = Answer(len(tasks))
        accepted: list[Task] = []
        in_request: set[str] = set()
        for task in tasks:
            task_type = task.get("taskType")
            if task_type == TASK_TYPE:
                status, task_errors = self._accept(
                    task, base_url, key, in_request, accepted, answer
                )
            elif task_type in LOOKUPS:
                status, task_errors = self._lookup(task, answer, details=task_type != "getResponse")
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
                answer.errors.extend(task_errors)
                answer.failure_statuses.append(status)
        if accepted:
            await self._answer_badly_if_faulted(accepted)
            # the tasks are accepted and billed already: an answer lost meanwhile is ambiguous
            await asyncio.sleep(self.faults.current.answer_delay_s)
        answer.waiting = [task for task in accepted if not task.acknowledged]
        return answer

    async def hold(self, answer: Answer) -> None:
        """Wait for the answer's sync tasks, up to the sync timeout, and fold them in."""
        if not answer.waiting:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(task.done.wait() for task in answer.waiting)),
                self.settings.sync_timeout_s,
            )
        shapes = self.shapes.current
        for task in answer.waiting:
            if task.remaining:
                answer.failure_statuses.append(504)
                answer.errors.append(timed_out(task))
                continue
            items, failures = task.results(shapes)
            answer.data.extend(items)
            answer.errors.extend(failures)
            if not items:
                code = failures[0]["code"]
                answer.failure_statuses.append(504 if code == "timeoutProvider" else 400)
        answer.waiting = []

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
        key: str,
        in_request: set[str],
        accepted: list[Task],
        answer: Answer,
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
        limit = self.faults.current.max_in_flight_per_key
        if limit and self.registry.in_flight[key] >= limit:
            # BFL refuses a key's task above its in-flight limit; Runware passes the 429 on
            message = f"At most {limit} tasks may be in flight per API key."
            return 429, [task_error("rateLimitExceeded", message, task)]
        in_request.add(request.task_uuid)
        accepted_task = self.registry.accept(request, task, base_url, key)
        accepted.append(accepted_task)
        if accepted_task.acknowledged and self.shapes.current.ack_body == "echo":
            answer.data.append({"taskType": TASK_TYPE, "taskUUID": request.task_uuid})
        return 200, []

    def _lookup(
        self, task: dict[str, Any], answer: Answer, *, details: bool
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
        shapes = self.shapes.current
        if details:
            items, failures = found.results(shapes)
            answer.data.append(
                {
                    "taskType": "getTaskDetails",
                    "taskUUID": task_uuid,
                    "request": [found.original],
                    "response": envelope(items, failures, all_failed=not items and bool(failures)),
                }
            )
        else:
            items, failures = found.poll(shapes)
            answer.data.extend(items)
            answer.errors.extend(failures)
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


def timed_out(task: Task) -> ErrorDict:
    """The error of a sync task held longer than the transport waits; it keeps running."""
    return api_error(
        "requestTimeout",
        "The task did not finish in time; it keeps running.",
        task_type=TASK_TYPE,
        task_uuid=task.request.task_uuid,
    )
