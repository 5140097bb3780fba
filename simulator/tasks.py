"""Accepted tasks: the registry, each image's generation, billing, and the views of a task's
results (sync answer, getResponse, webhook) in the shapes currently set."""

from __future__ import annotations

import asyncio
import base64
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from simulator.delivery import Deliverer
from simulator.errors import ErrorDict, api_error
from simulator.faults import FaultController
from simulator.images import EXTENSIONS, MEDIA_TYPES, ImageRenderer, ImageStore, spoiled
from simulator.pricing import image_cost
from simulator.settings import Adjustable, ShapeSettings, SimulatorSettings
from simulator.stats import Stats, plain
from simulator.validation import MAX_SEED, TASK_TYPE, ImageRequest

UINT32_RANGE = 2**32


def failed_item(error: ErrorDict) -> dict[str, Any]:
    """A failed image as an item of `data`, its error nested, as runware-sdk reads it."""
    return {
        "taskType": error.get("taskType", TASK_TYPE),
        "taskUUID": error["taskUUID"],
        "status": "error",
        "error": error,
    }


@dataclass
class Generation:
    """One requested image: processing until it becomes a result item or an error."""

    seed: int
    status: str = "processing"
    item: dict[str, Any] | None = None
    error: ErrorDict | None = None
    started_at: float = field(default_factory=time.monotonic)
    latency_s: float = 0.0
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def progress(self, now: float) -> int:
        """Percent of the planned latency elapsed; never 100 before the image exists."""
        if self.latency_s <= 0:
            return 0
        return min(99, int(100 * (now - self.started_at) / self.latency_s))

    def frame(self, shapes: ShapeSettings) -> dict[str, Any]:
        """This finished image on its own: `data` with its item, or with its failed item
        (failed_items=data), or `errors` with its error."""
        if self.item is not None:
            return {"data": [self.item]}
        if self.error is None:
            raise RuntimeError("the image is still processing")
        if shapes.failed_items == "data":
            return {"data": [failed_item(self.error)]}
        return {"errors": [self.error]}


@dataclass
class Task:
    request: ImageRequest
    original: dict[str, Any]
    base_url: str
    generations: list[Generation]
    # answered at once (async, or a webhook task under sync_webhook=ack), not held for results
    acknowledged: bool
    done: asyncio.Event = field(default_factory=asyncio.Event)
    charged_usd: Decimal = Decimal(0)
    remaining: int = 0
    finished_at: float | None = None
    # the label of the API key that submitted it (envelope.key_label)
    key: str = ""
    # images PUT to its uploadEndpoint so far
    uploads: int = 0

    def results(self, shapes: ShapeSettings) -> tuple[list[dict[str, Any]], list[ErrorDict]]:
        """A finished task as a sync answer or getTaskDetails carries it: failed images
        beside the successes (failed_items=data), or all of them in `errors` when none
        succeeded or under failed_items=errors."""
        items = [gen.item for gen in self.generations if gen.item is not None]
        errors = [gen.error for gen in self.generations if gen.error is not None]
        if shapes.failed_items == "data" and items and errors:
            return [item for gen in self.generations for item in gen.frame(shapes)["data"]], []
        return items, errors

    def poll(self, shapes: ShapeSettings) -> tuple[list[dict[str, Any]], list[ErrorDict]]:
        """Cumulative getResponse state of every image: processing, success, error."""
        data: list[dict[str, Any]] = []
        errors: list[ErrorDict] = []
        now = time.monotonic()
        for gen in self.generations:
            if gen.item is not None:
                data.append({**gen.item, "status": "success"})
            elif gen.error is not None and shapes.failed_items == "data":
                data.append(failed_item(gen.error))
            elif gen.error is not None:
                errors.append({**gen.error, "status": "error"})
            else:
                processing: dict[str, Any] = {
                    "taskType": TASK_TYPE,
                    "taskUUID": self.request.task_uuid,
                    "status": "processing",
                }
                if shapes.progress:
                    processing["progress"] = gen.progress(now)
                data.append(processing)
        return data, errors

    def state(self) -> dict[str, Any]:
        return {
            "taskUUID": self.request.task_uuid,
            "status": "done" if self.remaining == 0 else "processing",
            "images": [
                {
                    "status": gen.status,
                    "seed": gen.seed,
                    "imageUUID": gen.item["imageUUID"] if gen.item else None,
                    "code": gen.error["code"] if gen.error else None,
                }
                for gen in self.generations
            ],
            "charged_usd": plain(self.charged_usd),
            "request": self.original,
        }


def image_seeds(requested: int | None, count: int, rng: random.Random) -> list[int]:
    """The given seed first, then the next ones; a random uint32 base when none is given."""
    if requested is None:
        base = rng.randrange(UINT32_RANGE)
        return [(base + index) % UINT32_RANGE for index in range(count)]
    return [(requested + index) % (MAX_SEED + 1) for index in range(count)]


class TaskRegistry:
    """Owns every accepted task and the background work generating and delivering it."""

    def __init__(
        self,
        settings: SimulatorSettings,
        faults: FaultController,
        renderer: ImageRenderer,
        store: ImageStore,
        deliverer: Deliverer,
        stats: Stats,
        rng: random.Random,
        shapes: Adjustable[ShapeSettings],
    ) -> None:
        self.settings = settings
        self.shapes = shapes
        self.faults = faults
        self.renderer = renderer
        self.store = store
        self.deliverer = deliverer
        self.stats = stats
        self.rng = rng
        self.tasks: dict[str, Task] = {}
        # accepted and not yet finished, per key label
        self.in_flight: Counter[str] = Counter()
        # UUIDs outlive evicted tasks: a late resubmit must still meet conflictTaskUUID.
        self.seen: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._finished: deque[tuple[float, str]] = deque()
        # imageUUIDs come from their own unseeded source: os.urandom per image is slow on
        # some hosts, and a seeded source would repeat the same UUIDs in every run.
        self._uuid_bits = random.Random()

    def is_known(self, task_uuid: str) -> bool:
        return task_uuid in self.seen

    def get(self, task_uuid: str) -> Task | None:
        return self.tasks.get(task_uuid)

    def accept(
        self, request: ImageRequest, original: dict[str, Any], base_url: str, key: str
    ) -> Task:
        """Register a validated task of the key labelled `key` and start generating its
        images; `base_url` roots imageURL."""
        seeds = image_seeds(request.seed, request.number_results, self.rng)
        acknowledged = request.delivery_method == "async" or (
            request.webhook_url is not None and self.shapes.current.sync_webhook == "ack"
        )
        task = Task(
            request=request,
            original=original,
            base_url=base_url.rstrip("/"),
            generations=[Generation(seed=seed) for seed in seeds],
            acknowledged=acknowledged,
            remaining=len(seeds),
            key=key,
        )
        self.in_flight[key] += 1
        most = self.stats.max_in_flight_per_key
        most[key] = max(most.get(key, 0), self.in_flight[key])
        self.tasks[request.task_uuid] = task
        self.seen.add(request.task_uuid)
        self.stats.tasks_accepted += 1
        for index, generation in enumerate(task.generations):
            self.spawn(self._generate(task, generation, index))
        return task

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run in the background, holding a strong reference until it ends."""
        background = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(background)
        background.add_done_callback(self._background.discard)

    async def _generate(self, task: Task, generation: Generation, index: int) -> None:
        request = task.request
        generation.latency_s = self.faults.latency_s()
        if generation.latency_s > 0:
            await asyncio.sleep(generation.latency_s)
        fault = self.faults.image_fault(index)
        if fault is not None:
            error = api_error(
                fault.code, fault.message, task_type=TASK_TYPE, task_uuid=request.task_uuid
            )
            generation.status, generation.error = "error", error
            self.stats.image_errors += 1
            self._finish_one(task, generation)
            if request.webhook_url is not None and self.shapes.current.webhook_errors:
                await self.deliverer.webhook(request.webhook_url, self._error_body(error))
            return
        hostile = self.faults.current.hostile_images
        data = await self.renderer.image(
            request.prompt,
            generation.seed,
            request.width + 16 * (hostile == "wrong_size"),
            request.height,
            request.output_format,
            request.output_quality,
        )
        data = spoiled(data, hostile, self.faults.current.too_large_bytes)
        cost = image_cost(request.width, request.height, request.reference_megapixels)
        generation.item = self._result_item(task, generation.seed, data, cost)
        generation.status = "success"
        task.charged_usd += cost
        self.stats.charged_usd += cost
        self.stats.images_generated += 1
        self._finish_one(task, generation)
        await self._deliver(task, generation.item, data)

    def _error_body(self, error: ErrorDict) -> Any:
        shapes = self.shapes.current
        if shapes.failed_items == "errors":
            return {"errors": [{**error, "status": "error"}]}
        item = failed_item(error)
        return {"data": [item]} if shapes.webhook_body == "wrapped" else item

    def _result_item(self, task: Task, seed: int, data: bytes, cost: Decimal) -> dict[str, Any]:
        request = task.request
        image_uuid = str(uuid.UUID(int=self._uuid_bits.getrandbits(128), version=4))
        fmt = request.output_format
        item: dict[str, Any] = {
            "taskType": TASK_TYPE,
            "taskUUID": request.task_uuid,
            "imageUUID": image_uuid,
        }
        if request.output_type == "URL":
            ttl_s = request.ttl_s if request.ttl_s is not None else self.settings.default_ttl_s
            self.store.put(image_uuid, data, fmt, ttl_s * self.settings.ttl_scale)
            base_url = task.base_url
            if self.faults.current.hostile_images == "off_list":
                base_url = base_url.replace("://127.0.0.1:", "://localhost:", 1)
            item["imageURL"] = f"{base_url}/image/{image_uuid}.{EXTENSIONS[fmt]}"
        else:
            encoded = base64.b64encode(data).decode("ascii")
            if request.output_type == "base64Data":
                item["imageBase64Data"] = encoded
            else:
                item["imageDataURI"] = f"data:{MEDIA_TYPES[fmt]};base64,{encoded}"
        item["seed"] = seed
        item["NSFWContent"] = self.faults.nsfw_flag()
        if request.include_cost or self.shapes.current.cost == "always":
            item["cost"] = float(cost)
        return item

    async def _deliver(self, task: Task, item: dict[str, Any], data: bytes) -> None:
        request = task.request
        sends = []
        several = self.shapes.current.several_uploads
        if request.upload_endpoint is not None and (several == "each" or task.uploads == 0):
            task.uploads += 1
            media_type = MEDIA_TYPES[request.output_format]
            sends.append(self.deliverer.upload(request.upload_endpoint, data, media_type))
        if request.webhook_url is not None:
            wrapped = self.shapes.current.webhook_body == "wrapped"
            body = {"data": [item]} if wrapped else item
            sends.append(self.deliverer.webhook(request.webhook_url, body))
        if len(sends) == 1:
            await sends[0]
        elif sends:
            # Upload and webhook race, as nothing documents which one Runware finishes first.
            await asyncio.gather(*sends)

    def _finish_one(self, task: Task, generation: Generation) -> None:
        generation.finished.set()
        task.remaining -= 1
        if task.remaining == 0:
            self.in_flight[task.key] -= 1
            task.finished_at = time.monotonic()
            self._finished.append((task.finished_at, task.request.task_uuid))
            task.done.set()

    def evict_finished(self) -> None:
        """Forget tasks finished longer ago than the retention window."""
        horizon = time.monotonic() - self.settings.task_retention_s
        while self._finished and self._finished[0][0] <= horizon:
            _, task_uuid = self._finished.popleft()
            self.tasks.pop(task_uuid, None)

    def reset(self) -> None:
        for background in list(self._background):
            background.cancel()
        self.tasks.clear()
        self.in_flight.clear()
        self.seen.clear()
        self._finished.clear()
        self.store.clear()
        self.stats.reset()

    async def shutdown(self) -> None:
        pending = list(self._background)
        for background in pending:
            background.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
