"""The design we compare against: a worker that holds a sync Runware call open per job.

`celery -A bench.blocking worker` claims the job as the real worker does, then
POSTs it with `deliveryMethod: "sync"` and records the images from the answer, so a
worker process is busy for the whole generation.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from farmdomain.broker import celery_config
from farmdomain.settings import get_settings
from jobstore.bodies import record
from runware_edge.bodies import parse_body
from runware_edge.client import inference_task
from worker.context import process_context

BLOCKING_TASK = "bench.main.blocking"
BLOCKING_QUEUE = "bench.main.blocking"

app = Celery("bench.main.blocking")
# lazily: importing the module (the benchmark does, for the names) reads no settings
app.add_defaults(lambda: celery_config(get_settings()))


@worker_process_init.connect
def _fresh_context_after_fork(**_: Any) -> None:
    process_context.cache_clear()


@app.task(name=BLOCKING_TASK, ignore_result=True)
def render_blocking(job_id: str) -> None:
    context = process_context()
    job = context.store.claim(job_id, 0)
    if job is None:
        return
    task = {**inference_task(job.task_uuid, job.request, ""), "deliveryMethod": "sync"}
    del task["webhookURL"]
    items = context.runware.submit(task)
    record(context.store, parse_body({"data": items}), "sync")
