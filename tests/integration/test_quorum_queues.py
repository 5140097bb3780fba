"""The farm's queues as quorum queues on RabbitMQ (a vhost of the test's own on the
machine's node): a countdown under a second comes back through Celery's native delayed
delivery as the worker sets it up, and a reaper run not started in time expires."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from farmdomain.broker import REAP_QUEUE, REAP_TASK, SUBMIT_QUEUE, SUBMIT_TASK
from farmdomain.settings import Settings
from tests import services
from worker.app import FarmCelery, create_app
from worker.consumer import ClusterDelayedDelivery

pytestmark = pytest.mark.integration


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FarmCelery]:
    with services.run_rabbitmq_vhost("quorum") as url:
        settings = Settings(data_dir=tmp_path, broker_url=url, broker_queue_type="quorum")
        app = create_app(settings)
        with app.connection_for_write() as conn:
            for queue in app.amqp.queues.values():
                queue(conn.default_channel).declare()
        consumer = SimpleNamespace(app=app)
        ClusterDelayedDelivery(consumer).start(consumer)
        yield app
        app.close()


def _depth(app: FarmCelery, queue: str) -> int:
    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        return int(channel.queue_declare(queue=queue, passive=True).message_count)


def _until(what: str, check: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never observed: {what}"
        time.sleep(0.05)


def test_a_countdown_under_a_second_comes_back_to_its_queue_through_delayed_delivery(
    app: FarmCelery,
) -> None:
    app.send_task(SUBMIT_TASK, args=("job", 1), queue=SUBMIT_QUEUE, countdown=0.3)
    _until("the delayed message in the submit queue", lambda: _depth(app, SUBMIT_QUEUE) == 1)
    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        message = channel.basic_get(SUBMIT_QUEUE, no_ack=True)
    # its routing key spells the delay in binary, one level of delayed queues a bit
    assert message.delivery_info["routing_key"] == "0." * 27 + "1." + SUBMIT_QUEUE


def test_a_reaper_run_not_started_within_its_expiry_leaves_its_quorum_queue(
    app: FarmCelery,
) -> None:
    app.send_task(REAP_TASK, queue=REAP_QUEUE, expires=1)
    kept = app.send_task(REAP_TASK, queue=REAP_QUEUE)
    _until("the expired run gone", lambda: _depth(app, REAP_QUEUE) == 1)
    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        message = channel.basic_get(REAP_QUEUE, no_ack=True)
    assert message.headers["id"] == kept.id
