"""The broker contract shared by producers and workers: task names, queue, Celery config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kombu import Queue

from farmdomain import embedded_broker
from farmdomain.settings import Settings

SUBMIT_TASK = "fluxfarm.submit"
# one message for several jobs: args [[job_id, expected_attempts], ...]
SUBMIT_MANY_TASK = "fluxfarm.submit_many"
REAP_TASK = "fluxfarm.reap"
# the reaper recovers the submit queue's lost work, so it must never wait behind that queue
REAP_QUEUE = "fluxfarm.reap"
SUBMIT_QUEUE = "fluxfarm.submit"
# copying result images into the results store: args [[taskUUID, imageUUID], ...]
COPY_TASK = "fluxfarm.copy_results"
COPY_QUEUE = "fluxfarm.copy"
# delivering a terminal job's callback: args [job_id]; and sending the due ones (beat)
DELIVER_TASK = "fluxfarm.deliver_callback"
DRIVE_CALLBACKS_TASK = "fluxfarm.drive_callbacks"
# a receiver holding its answer must not hold up submissions, nor they the callbacks
CALLBACK_QUEUE = "fluxfarm.callbacks"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings every process agrees on; the worker adds its own on top."""
    broker_url = settings.resolved_broker_url()
    transport_options: dict[str, Any] = {}
    if broker_url.startswith(f"{embedded_broker.ALIAS}+"):
        embedded_broker.register()
        Path(broker_url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    if broker_url.startswith(("redis:", "rediss:")):
        # unacked messages of a dead worker come back after this; the reaper covers the rest
        transport_options["visibility_timeout"] = 600
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": SUBMIT_QUEUE,
        # a worker started without --queues takes them all; copies may get workers of their own
        "task_queues": tuple(
            Queue(name) for name in (SUBMIT_QUEUE, COPY_QUEUE, REAP_QUEUE, CALLBACK_QUEUE)
        ),
        "task_routes": {
            COPY_TASK: {"queue": COPY_QUEUE},
            REAP_TASK: {"queue": REAP_QUEUE},
            DELIVER_TASK: {"queue": CALLBACK_QUEUE},
            # beat's drive is small and must not wait behind slow receivers
            DRIVE_CALLBACKS_TASK: {"queue": REAP_QUEUE},
        },
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # the submit task waits on I/O only; a few reserved messages keep a process busy
        # without hiding much work from its peers if it dies
        "worker_prefetch_multiplier": settings.worker_prefetch,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_create_missing_queues": True,
    }
