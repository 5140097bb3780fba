"""The broker contract: quorum queues on a RabbitMQ cluster, failover URLs, clear refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import MessageNacked
from celery import Celery
from kombu import Connection
from kombu.exceptions import OperationalError

from farmdomain import broker
from farmdomain.broker import QUEUES, BrokerCelery, celery_config
from farmdomain.errors import ConfigurationError
from farmdomain.settings import Settings

CLUSTER = "amqp://guest:guest@10.0.0.1:5672//;amqp://guest:guest@10.0.0.2:5672//"


def _app(tmp_path: Path, **settings: Any) -> Celery:
    app = Celery(set_as_current=False)
    app.conf.update(celery_config(Settings(data_dir=tmp_path, **settings)))
    return app


def test_quorum_makes_every_farm_queue_quorum_on_a_topic_exchange_of_its_own(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path, broker_url=CLUSTER, broker_queue_type="quorum")
    queues = app.amqp.queues
    assert set(QUEUES) <= set(queues)
    for name in QUEUES:
        assert queues[name].queue_arguments == {"x-queue-type": "quorum"}
        assert (queues[name].exchange.name, queues[name].exchange.type) == (name, "topic")
        assert queues[name].durable
    # a queue Celery would make on its own is quorum too
    assert queues["elsewhere"].queue_arguments == {"x-queue-type": "quorum"}
    assert app.conf.worker_detect_quorum_queues
    assert app.conf.broker_transport_options["confirm_publish"] is True


def test_classic_queues_are_declared_as_before(tmp_path: Path) -> None:
    app = _app(tmp_path, broker_url="amqp://guest:guest@10.0.0.1:5672//")
    assert all(app.amqp.queues[name].queue_arguments is None for name in QUEUES)
    assert "confirm_publish" not in app.conf.broker_transport_options


def test_several_amqp_urls_are_failover_nodes_tried_in_turn(tmp_path: Path) -> None:
    app = _app(tmp_path, broker_url=CLUSTER, broker_queue_type="quorum")
    connection = Connection(app.conf.broker_url)
    assert connection.alt == CLUSTER.split(";")


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        (
            {"broker_url": "redis://127.0.0.1:6379/0", "broker_queue_type": "quorum"},
            "FLUXFARM_BROKER_QUEUE_TYPE",
        ),
        ({"broker_queue_type": "quorum"}, "FLUXFARM_BROKER_QUEUE_TYPE"),
        ({"broker_url": "redis://a:6379/0;redis://b:6379/0"}, "FLUXFARM_BROKER_URL"),
    ],
    ids=["quorum-on-redis", "quorum-on-embedded", "failover-on-redis"],
)
def test_broker_settings_that_cannot_work_are_refused_by_name(
    tmp_path: Path, settings: dict[str, str], setting: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        celery_config(Settings(data_dir=tmp_path, **settings))
    assert refused.value.setting == setting


@pytest.mark.parametrize(
    ("queue_type", "countdown", "sent"),
    [("quorum", 0.3, 1), ("quorum", 1.2, 2), ("classic", 0.3, 0.3)],
)
def test_a_countdown_on_quorum_queues_is_whole_seconds_never_under_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, queue_type: str, countdown: float, sent: float
) -> None:
    app = BrokerCelery(set_as_current=False)
    app.conf.update(
        celery_config(
            Settings(
                data_dir=tmp_path,
                broker_url="amqp://guest:guest@10.0.0.1:5672//",
                broker_queue_type=queue_type,
            )
        )
    )
    seen: list[Any] = []
    monkeypatch.setattr(Celery, "send_task", lambda _app, name, **options: seen.append(options))
    app.send_task("fluxfarm.submit", args=("job", 1), countdown=countdown)
    assert seen == [{"args": ("job", 1), "countdown": sent}]


def _refusing(failures: list[Exception]) -> Callable[..., str]:
    def send_task(_app: Celery, name: str, **options: Any) -> str:
        if failures:
            raise failures.pop(0)
        return name

    return send_task


def _nacked() -> OperationalError:
    try:
        raise OperationalError("nacked") from MessageNacked()
    except OperationalError as exc:
        return exc


def test_a_publish_the_cluster_nacked_during_an_election_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = BrokerCelery(set_as_current=False)
    app.conf.update(celery_config(Settings(data_dir=tmp_path, broker_url=CLUSTER)))
    failures: list[Exception] = [_nacked(), _nacked()]
    monkeypatch.setattr(Celery, "send_task", _refusing(failures))
    monkeypatch.setattr(broker.time, "sleep", lambda _s: None)
    assert app.send_task("fluxfarm.submit") == "fluxfarm.submit"
    assert failures == []


def test_a_broker_that_cannot_be_reached_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = BrokerCelery(set_as_current=False)
    app.conf.update(celery_config(Settings(data_dir=tmp_path, broker_url=CLUSTER)))
    unreachable = OperationalError("[Errno 111] Connection refused")
    monkeypatch.setattr(Celery, "send_task", _refusing([unreachable]))
    with pytest.raises(OperationalError):
        app.send_task("fluxfarm.submit")
