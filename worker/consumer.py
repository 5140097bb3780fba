"""The worker's Celery consumer: Celery's own, with delayed delivery set up once per cluster."""

from __future__ import annotations

from typing import cast

from celery import bootsteps
from celery.worker.consumer import Consumer
from celery.worker.consumer.delayed_delivery import DelayedDelivery


class ClusterDelayedDelivery(DelayedDelivery):
    """Celery's native delayed delivery, set up through the failover connection.

    Celery takes each `;`-separated broker URL for a broker of its own and, before the
    worker consumes again after a reconnect, retries a dead node's for seconds on end. The
    nodes of a cluster share its exchanges and queues: one setup through the failover URL,
    which goes on to the next node past a dead one, is enough.
    """

    def _validate_broker_urls(self, broker_urls: str | list[str]) -> set[str]:
        return {broker_urls if isinstance(broker_urls, str) else ";".join(broker_urls)}


_STEPS = [
    f"{__name__}:{ClusterDelayedDelivery.__name__}" if step.endswith(":DelayedDelivery") else step
    for step in Consumer.Blueprint.default_steps
]


class FarmConsumer(Consumer):
    """Celery's consumer with ClusterDelayedDelivery in place of Celery's own step."""

    Blueprint = cast(
        "type[bootsteps.Blueprint]",
        type("Blueprint", (Consumer.Blueprint,), {"default_steps": _STEPS}),
    )
