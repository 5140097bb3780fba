"""The Celery application of worker and beat processes, built by a factory from settings.

`celery -A worker.app worker|beat` reads the environment once, when Celery asks this
module for `app`; importing the module reads nothing. Each worker process opens its own
`WorkerContext` when it starts (after the fork in a prefork child, so no socket is shared
with the parent) and its tasks reach it as `self.context` through `FarmTask`.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, cast

import structlog
from celery import Task
from celery.signals import (
    beat_init,
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)
from prometheus_client import start_http_server

from farmdomain import metrics
from farmdomain.broker import (
    COPY_TASK,
    DELIVER_TASK,
    DISPATCH_QUEUE,
    DISPATCH_TASK,
    DRIVE_CALLBACKS_TASK,
    REAP_QUEUE,
    REAP_TASK,
    SUBMIT_MANY_TASK,
    SUBMIT_TASK,
    BrokerCelery,
    celery_config,
)
from farmdomain.errors import ConfigurationError
from farmdomain.heap import freeze_startup_heap
from farmdomain.logs import configure_logging
from farmdomain.settings import Settings
from jobstore.migrations import require_current_schema
from jobstore.observer import instrument
from jobstore.store import JobStore
from runware_edge.client import RunwareClient
from worker import copying, delivery, dispatcher, reaper, tasks
from worker.context import NoHooks, SubmitHooks, WorkerContext
from worker.copying import Copier

log = structlog.get_logger(__name__)


class FarmCelery(BrokerCelery):
    """A Celery app that knows its settings and holds its process's context."""

    def __init__(self, settings: Settings, hooks: SubmitHooks) -> None:
        super().__init__("fluxfarm", task_cls=FarmTask)
        self.settings = settings
        self.hooks = hooks
        self._context: WorkerContext | None = None
        self._context_lock = threading.Lock()

    @property
    def context(self) -> WorkerContext:
        """This process's context; opened at first use where no worker signal opened it
        (a task called in a test, or a producer process)."""
        with self._context_lock:
            if self._context is None:
                self._context = open_context(self)
            return self._context

    def reopen_context(self) -> None:
        """A fresh context for a forked child; the parent's stays the parent's."""
        with self._context_lock:
            if self._context is not None:
                # the inherited pool's connections belong to the parent: drop, never close
                self._context.store.engine.dispose(close=False)
            self._context = open_context(self)

    def close_context(self) -> None:
        with self._context_lock:
            if self._context is not None:
                self._context.close()
                self._context = None


class FarmTask(Task):  # type: ignore[type-arg]
    """The base of every fluxfarm task: `self.context` is the process's context."""

    @property
    def context(self) -> WorkerContext:
        app = self.app
        if not isinstance(app, FarmCelery):
            raise TypeError("fluxfarm tasks run on a FarmCelery app")
        return app.context


def open_context(app: FarmCelery) -> WorkerContext:
    settings = app.settings
    store = instrument(JobStore.from_settings(settings))
    return WorkerContext(
        settings,
        app,
        store,
        RunwareClient(settings),
        app.hooks,
        tasks.submit_claims,
        Copier(settings, store.engine, observers=store.observers),
    )


def check_worker_settings(settings: Settings) -> None:
    """What a worker cannot run without; raises ConfigurationError naming the setting."""
    if settings.runware_api_key is None or not settings.runware_api_key.get_secret_value():
        raise ConfigurationError(
            "FLUXFARM_RUNWARE_API_KEY", "is not set: a worker cannot submit to Runware"
        )
    settings.check_webhook_secret()
    require_current_schema(settings.resolved_database_url())


def create_app(settings: Settings, hooks: SubmitHooks | None = None) -> FarmCelery:
    """The worker and beat app for `settings`; `hooks` default to none."""
    app = FarmCelery(settings, hooks or NoHooks())
    app.conf.update(celery_config(settings))
    app.conf.worker_consumer = "worker.consumer:FarmConsumer"
    # After a reconnect Celery lowers the prefetch and raises it again as each task of
    # before the loss is acknowledged, with a basic.qos sent from the thread that ran the
    # task. On the threads pool that thread then reads the consumer's connection while the
    # consumer reads it too, and both wait for good. Without the lowering the new
    # connection fetches its full prefetch at once; the messages of tasks still running
    # come back to the queue all the same, and the submit task skips a job gone past them.
    app.conf.worker_enable_prefetch_count_reduction = False
    app.conf.beat_schedule = {
        "reap": {
            "task": REAP_TASK,
            "schedule": settings.reaper_interval_s,
            # a run not started within its interval is dropped: the next one does its work,
            # so a late reaper never runs back to back with the copies beat kept adding
            "options": {"queue": REAP_QUEUE, "expires": settings.reaper_interval_s},
        },
        "dispatch": {
            "task": DISPATCH_TASK,
            "schedule": settings.admission_dispatch_interval_s,
            "options": {"queue": DISPATCH_QUEUE, "expires": settings.admission_dispatch_interval_s},
        },
        "drive-callbacks": {
            "task": DRIVE_CALLBACKS_TASK,
            "schedule": settings.callback_drive_interval_s,
            "options": {"queue": REAP_QUEUE, "expires": settings.callback_drive_interval_s},
        },
    }
    app.conf.beat_schedule_filename = str(settings.data_dir / "beat-schedule")
    # bound tasks: their first argument is the FarmTask (the stubs only know Task)
    for name, run in (
        (SUBMIT_TASK, tasks.submit),
        (SUBMIT_MANY_TASK, tasks.submit_many),
        (REAP_TASK, reaper.reap),
        (DISPATCH_TASK, dispatcher.dispatch),
        (COPY_TASK, copying.copy_results),
        (DELIVER_TASK, delivery.deliver_callback),
        (DRIVE_CALLBACKS_TASK, delivery.drive_callbacks),
    ):
        app.task(name=name, bind=True, ignore_result=True)(cast("Callable[..., None]", run))
    _connect_signals(app)
    return app


def _connect_signals(app: FarmCelery) -> None:
    # handlers are closures over this app; Celery keeps only weak references by default
    settings = app.settings

    def configure_process_logging(**_: Any) -> None:
        configure_logging(settings, "worker")

    def start_worker(sender: Any, **_: Any) -> None:
        if sender.app is not app:
            return
        _refuse_to_start("worker", lambda: check_worker_settings(settings))
        # before the pool forks, so every child writes to the group's multiprocess directory
        metrics.start_group(settings)
        app.context  # noqa: B018 - opened now, not by the first task
        if settings.worker_metrics_port is not None:
            serve_worker_metrics(settings.worker_metrics_port)

    def start_beat(sender: Any, **_: Any) -> None:
        if sender.app is app:
            _refuse_to_start(
                "beat", lambda: require_current_schema(settings.resolved_database_url())
            )

    def child_started(**_: Any) -> None:
        app.reopen_context()
        freeze_startup_heap()

    def process_stopping(**_: Any) -> None:
        app.close_context()
        metrics.process_exited(os.getpid())

    setup_logging.connect(configure_process_logging, weak=False)
    worker_init.connect(start_worker, weak=False)
    beat_init.connect(start_beat, weak=False)
    worker_process_init.connect(child_started, weak=False)
    # the process running the tasks of a thread (or solo) pool, once it has started
    worker_ready.connect(lambda **_: freeze_startup_heap(), weak=False)
    worker_process_shutdown.connect(process_stopping, weak=False)


def _refuse_to_start(process: str, check: Any) -> None:
    try:
        check()
    except ConfigurationError as exc:
        # one clear line and a non-zero exit, not a worker that takes jobs it cannot run
        raise SystemExit(f"fluxfarm {process}: {exc}") from None


def serve_worker_metrics(port: int) -> None:
    """The worker group's /metrics on `port`, from a daemon thread of the main process."""
    registry = metrics.exposition_registry()
    server, _ = start_http_server(port, addr="0.0.0.0", registry=registry)  # noqa: S104
    log.info("metrics.serving", port=server.server_port)


def __getattr__(name: str) -> FarmCelery:
    # `celery -A worker.app` asks for `app`: only then is the environment read
    if name == "app":
        return _app_from_environment()
    raise AttributeError(name)


@functools.cache
def _app_from_environment() -> FarmCelery:
    return create_app(Settings())
