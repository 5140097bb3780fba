"""The Celery application that worker and beat processes run (`celery -A worker.app`)."""

from __future__ import annotations

import os
from typing import Any

import structlog
from celery import Celery
from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)
from prometheus_client import start_http_server

from farmdomain import metrics
from farmdomain.broker import REAP_TASK, celery_config
from farmdomain.heap import freeze_startup_heap
from farmdomain.logs import configure_logging
from farmdomain.settings import get_settings
from jobstore.observer import instrument
from worker.context import process_context

log = structlog.get_logger(__name__)

settings = get_settings()

app = Celery("fluxfarm", include=["worker.tasks", "worker.reaper"])
app.conf.update(celery_config(settings))
app.conf.beat_schedule = {
    "reap": {"task": REAP_TASK, "schedule": settings.reaper_interval_s},
}
app.conf.beat_schedule_filename = str(settings.data_dir / "beat-schedule")


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    configure_logging(settings, "worker")


@worker_init.connect
def _start_metrics(**_: Any) -> None:
    # before the pool forks, so every child writes to the group's multiprocess directory
    metrics.start_group(settings)
    instrument(process_context().store)
    if settings.worker_metrics_port is not None:
        serve_worker_metrics(settings.worker_metrics_port)


@worker_process_init.connect
def _fresh_context_after_fork(**_: Any) -> None:
    # connections and pools opened before the fork must not be shared with the parent
    process_context.cache_clear()
    instrument(process_context().store)
    freeze_startup_heap()


@worker_ready.connect
def _freeze_heap(**_: Any) -> None:
    # the process running the tasks of a thread (or solo) pool, once it has started
    freeze_startup_heap()


@worker_process_shutdown.connect
def _close_clients(**_: Any) -> None:
    context = process_context()
    if "runware" in vars(context):
        context.runware.close()
    if "store" in vars(context):
        context.store.engine.dispose()
    metrics.process_exited(os.getpid())


def serve_worker_metrics(port: int) -> None:
    """The worker group's /metrics on `port`, from a daemon thread of the main process."""
    registry = metrics.exposition_registry()
    server, _ = start_http_server(port, addr="0.0.0.0", registry=registry)  # noqa: S104
    log.info("metrics.serving", port=server.server_port)
