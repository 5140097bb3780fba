"""`retry`: a failed job queued again as a new job linked to it, only when asked."""

from __future__ import annotations

from typing import Any

import pytest

from farmdomain.errors import NotRetryable
from farmdomain.jobs import JobState
from farmdomain.values import Failure
from jobstore.creation import NewJob
from producers.cli import main
from producers.client import FluxfarmClient
from tests.producers.conftest import BrokerQueue


def _failed_job(client: FluxfarmClient, request: dict[str, Any]) -> str:
    job_id = client.submit(request)
    client.store.fail(job_id, Failure(reason="server", message="gave up after 6 attempts"))
    return job_id


def test_retry_of_a_failed_job_queues_a_new_job_with_a_new_task_uuid(
    client: FluxfarmClient, valid_request: dict[str, Any], broker: BrokerQueue
) -> None:
    failed_id = _failed_job(client, valid_request)
    broker.drain()

    retried = client.retry(failed_id)

    failed = client.get(failed_id)
    assert retried.id != failed_id
    assert retried.retry_of == failed_id
    assert retried.state is JobState.QUEUED
    assert retried.task_uuid != failed.task_uuid
    assert retried.request == failed.request
    assert failed.state is JobState.FAILED
    assert broker.drain() == [("fluxfarm.submit", [retried.id, 0])]


def test_asking_twice_returns_the_same_new_job_and_publishes_once(
    client: FluxfarmClient, valid_request: dict[str, Any], broker: BrokerQueue
) -> None:
    failed_id = _failed_job(client, valid_request)
    broker.drain()

    first = client.retry(failed_id)
    second = client.retry(failed_id)

    assert first.id == second.id
    assert len(broker.drain()) == 1


@pytest.mark.parametrize("finish", ["queued", "canceled", "submitted"])
def test_only_a_failed_job_can_be_retried(
    client: FluxfarmClient, valid_request: dict[str, Any], finish: str
) -> None:
    job_id = client.submit(valid_request)
    if finish == "canceled":
        client.cancel(job_id)
    elif finish == "submitted":
        client.store.claim(job_id, 0)
        client.store.mark_submitted(job_id, {})

    with pytest.raises(NotRetryable, match="only a failed job can be retried"):
        client.retry(job_id)


def test_cli_retry_prints_the_new_job(
    client: FluxfarmClient,
    valid_request: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failed_id = _failed_job(client, valid_request)
    monkeypatch.setenv("FLUXFARM_DATA_DIR", str(client.settings.data_dir))

    code = main(["retry", failed_id, "--json"])

    out, err = capsys.readouterr()
    assert code == 0
    assert f"retrying {failed_id} as " in err
    assert f'"retryOf": "{failed_id}"' in out


def test_a_retry_calls_back_where_the_failed_job_would_have(
    client: FluxfarmClient, valid_request: dict[str, Any], broker: BrokerQueue
) -> None:
    hook = "https://hooks.example.com/fluxfarm"
    [(failed, _)] = client.store.create_jobs(
        [NewJob(valid_request, callback_url=hook)], tenant=client.tenant, deadline_s=60
    )
    client.store.fail(failed.id, Failure(reason="server", message="gave up"))

    retried = client.retry(failed.id)

    assert retried.callback_url == hook
    assert client.get(retried.id).callback_url == hook
