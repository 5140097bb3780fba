"""The broker contract shared by producers and workers: task names, queue, Celery config."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from amqp.exceptions import MessageNacked
from celery import Celery
from celery.result import AsyncResult
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError

from farmdomain import embedded_broker
from farmdomain.errors import ConfigurationError
from farmdomain.settings import Settings

SUBMIT_TASK = "fluxfarm.submit"
# one message for several jobs: args [[job_id, expected_attempts], ...]
SUBMIT_MANY_TASK = "fluxfarm.submit_many"
REAP_TASK = "fluxfarm.reap"
# the reaper recovers the submit queue's lost work, so it must never wait behind that queue
REAP_QUEUE = "fluxfarm.reap"
SUBMIT_QUEUE = "fluxfarm.submit"
# admitting waiting jobs as the Runware cap frees (worker.dispatcher), run by beat: on a
# queue of its own so that it never waits behind the submissions it admits
DISPATCH_TASK = "fluxfarm.dispatch"
DISPATCH_QUEUE = "fluxfarm.dispatch"
# copying result images into the results store: args [[taskUUID, imageUUID], ...]
COPY_TASK = "fluxfarm.copy_results"
COPY_QUEUE = "fluxfarm.copy"
# delivering a terminal job's callback: args [job_id]; and sending the due ones (beat)
DELIVER_TASK = "fluxfarm.deliver_callback"
DRIVE_CALLBACKS_TASK = "fluxfarm.drive_callbacks"
# a receiver holding its answer must not hold up submissions, nor they the callbacks
CALLBACK_QUEUE = "fluxfarm.callbacks"
QUEUES = (SUBMIT_QUEUE, COPY_QUEUE, REAP_QUEUE, CALLBACK_QUEUE, DISPATCH_QUEUE)
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


# a cluster refuses (nacks) a publish to a quorum queue while it elects the queue's new
# leader, after the old one's node died: the publish is tried again over a few seconds
NACKED_RETRY_DELAYS_S = (0.1, 0.2, 0.4, 0.8, 1.6)


class BrokerCelery(Celery):
    """A Celery app that publishes as the farm's queues take it: countdowns in whole
    seconds on quorum queues, and a publish the cluster refused during an election again."""

    def send_task(self, name: str, *args: Any, **options: Any) -> AsyncResult[Any]:
        countdown = options.get("countdown")
        if countdown and self.conf.task_default_queue_type == "quorum":
            # a quorum queue's countdown travels through Celery's native delayed delivery,
            # which counts whole seconds and refuses a countdown under one (ValueError)
            options["countdown"] = math.ceil(countdown)
        for delay in NACKED_RETRY_DELAYS_S:
            try:
                return super().send_task(name, *args, **options)
            except OperationalError as exc:
                if not isinstance(exc.__cause__, MessageNacked):
                    raise
            time.sleep(delay)
        return super().send_task(name, *args, **options)


def broker_urls(settings: Settings) -> list[str]:
    """The broker's URLs: one, or a RabbitMQ cluster's nodes, `;`-separated, tried in turn."""
    urls = [url.strip() for url in settings.resolved_broker_url().split(";") if url.strip()]
    schemes = {url.partition(":")[0] for url in urls}
    if len(urls) > 1 and not schemes <= set(AMQP_SCHEMES):
        raise ConfigurationError(
            "FLUXFARM_BROKER_URL",
            f"several URLs are the nodes of one RabbitMQ cluster (amqp://); got {sorted(schemes)}",
        )
    if settings.broker_queue_type == "quorum" and not schemes <= set(AMQP_SCHEMES):
        raise ConfigurationError(
            "FLUXFARM_BROKER_QUEUE_TYPE",
            f"quorum queues are RabbitMQ's: FLUXFARM_BROKER_URL must be amqp://, not {urls[0]}",
        )
    return urls


def _queues(settings: Settings) -> tuple[Queue, ...]:
    if settings.broker_queue_type == "classic":
        return tuple(Queue(name) for name in QUEUES)
    # each on a topic exchange of its own: Celery's native delayed delivery hands a due
    # countdown message back through the queue's exchange, and never through a direct one
    return tuple(
        Queue(
            name,
            Exchange(name, type="topic"),
            routing_key=name,
            queue_arguments={"x-queue-type": "quorum"},
        )
        for name in QUEUES
    )


def _quorum_config() -> dict[str, Any]:
    """What Celery needs on quorum queues besides the queues' own type."""
    return {
        # queues Celery declares by itself (a route to an unlisted queue) are quorum too
        "task_default_queue_type": "quorum",
        "task_create_missing_queue_type": "quorum",
        "task_create_missing_queue_exchange_type": "topic",
        # quorum queues refuse a global QoS: the worker sees the queues' type and sets
        # its prefetch per consumer, and sends countdowns through delayed-delivery queues
        # (quorum as well) instead of holding them, which a fixed prefetch cannot afford
        "worker_detect_quorum_queues": True,
        "broker_native_delayed_delivery_queue_type": "quorum",
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings every process agrees on; the worker adds its own on top.
    Raises ConfigurationError when the broker settings cannot work together."""
    urls = broker_urls(settings)
    broker_url = ";".join(urls)
    transport_options: dict[str, Any] = {}
    if broker_url.startswith(f"{embedded_broker.ALIAS}+"):
        embedded_broker.register()
        Path(broker_url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    if broker_url.startswith(("redis:", "rediss:")):
        # unacked messages of a dead worker come back after this; the reaper covers the rest
        transport_options["visibility_timeout"] = 600
    quorum = settings.broker_queue_type == "quorum"
    if quorum:
        # a publish returns once a majority of the nodes hold the message, so the death of
        # the node it went through loses nothing that was acknowledged
        transport_options["confirm_publish"] = True
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
        "task_queues": _queues(settings),
        "task_routes": {
            COPY_TASK: {"queue": COPY_QUEUE},
            REAP_TASK: {"queue": REAP_QUEUE},
            DISPATCH_TASK: {"queue": DISPATCH_QUEUE},
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
        **(_quorum_config() if quorum else {}),
    }
