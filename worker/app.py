"""The Celery application that worker and beat processes run (`celery -A worker.app`)."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_init, worker_process_shutdown

from core.broker import REAP_TASK, celery_config
from core.logs import configure_logging
from core.settings import get_settings
from worker.context import process_context

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


@worker_process_init.connect
def _fresh_context_after_fork(**_: Any) -> None:
    # connections and pools opened before the fork must not be shared with the parent
    process_context.cache_clear()


@worker_process_shutdown.connect
def _close_clients(**_: Any) -> None:
    context = process_context()
    if "runware" in vars(context):
        context.runware.close()
    if "store" in vars(context):
        context.store.engine.dispose()
