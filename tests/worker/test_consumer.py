"""The worker's consumer sets Celery's delayed delivery up once, through the failover URL,
and never touches its connection from a pool thread."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from farmdomain.settings import Settings
from worker.app import create_app
from worker.consumer import ClusterDelayedDelivery, FarmConsumer

CLUSTER = "amqp://guest:guest@10.0.0.1:5672//;amqp://guest:guest@10.0.0.2:5672//"


def test_the_worker_runs_the_farm_consumer_with_the_cluster_step(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, broker_url=CLUSTER, broker_queue_type="quorum"))
    assert app.conf.worker_consumer == "worker.consumer:FarmConsumer"
    steps = FarmConsumer.Blueprint.default_steps
    assert "worker.consumer:ClusterDelayedDelivery" in steps
    assert not any(step.endswith("delayed_delivery:DelayedDelivery") for step in steps)


def test_no_prefetch_change_is_sent_from_a_pool_thread_after_a_reconnect(tmp_path: Path) -> None:
    # Celery's gradual restore after a reconnect sends basic.qos from the thread that ran
    # the task: on the threads pool it and the consumer then both read one connection and
    # hang (the RabbitMQ restart of tests/integration/chaos/test_chaos.py met it)
    app = create_app(Settings(data_dir=tmp_path, broker_url=CLUSTER))
    assert app.conf.worker_enable_prefetch_count_reduction is False


def test_delayed_delivery_is_set_up_once_for_all_nodes_of_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(Settings(data_dir=tmp_path, broker_url=CLUSTER, broker_queue_type="quorum"))
    consumer = SimpleNamespace(app=app)
    urls: list[str] = []

    def setup(_step: Any, _consumer: Any, url: str) -> None:
        urls.append(url)

    monkeypatch.setattr(ClusterDelayedDelivery, "_setup_delayed_delivery", setup)
    ClusterDelayedDelivery(consumer).start(consumer)
    assert urls == [CLUSTER]
