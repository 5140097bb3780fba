"""The design we compare against: a worker that holds a sync Runware call open per job.

`celery -A bench.blocking worker` claims the job as the real worker does, then
POSTs it with `deliveryMethod: "sync"` and records the images from the answer, so a
worker process is busy for the whole generation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

from celery import Task

from farmdomain.settings import Settings
from jobstore.bodies import record
from jobstore.copies import keys_to_copy
from runware_edge.bodies import parse_body
from runware_edge.client import inference_task
from runware_edge.wire import InferenceTask
from worker.app import FarmCelery, create_app

BLOCKING_TASK = "bench.blocking"
BLOCKING_QUEUE = "bench.blocking"


def render_blocking(task: Task[Any, Any], job_id: str) -> None:
    context = cast(FarmCelery, task.app).context
    job = context.store.claim(job_id, 0)
    if job is None:
        return
    request: InferenceTask = {
        **inference_task(job.task_uuid, job.request, ""),
        "deliveryMethod": "sync",
    }
    del request["webhookURL"]
    items = context.runware.submit(request)
    parsed = parse_body({"data": items})
    recorded = record(context.store, parsed, "sync")
    # a job succeeds once its images are kept: this design keeps them in the same task
    context.copier.copy_all(keys_to_copy([parsed], [recorded]))


@functools.cache
def _app() -> FarmCelery:
    app = create_app(Settings())
    app.task(name=BLOCKING_TASK, bind=True, ignore_result=True)(
        cast("Callable[..., None]", render_blocking)
    )
    return app


def __getattr__(name: str) -> FarmCelery:
    # `celery -A bench.blocking` asks for `app`: only then is the environment read
    if name == "app":
        return _app()
    raise AttributeError(name)
