"""FluxfarmClient against a real SQLite store and a real SQLite broker."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from structlog.typing import EventDict

from farmdomain.broker import SUBMIT_MANY_TASK, SUBMIT_TASK
from farmdomain.errors import IdempotencyConflict, JobNotFound, RequestInvalid, WaitTimedOut
from farmdomain.jobs import JobState
from farmdomain.listing import JobQuery
from farmdomain.request_schema import parse_request
from farmdomain.settings import Settings
from farmdomain.values import Failure
from producers.client import FluxfarmClient
from tests.producers.conftest import CALLBACK_HOST


def test_submit_commits_a_queued_row_and_publishes_one_message(
    client: FluxfarmClient, broker: Any, valid_request: dict[str, Any]
) -> None:
    job_id = client.submit(valid_request)

    job = client.get(job_id)
    assert job.state is JobState.QUEUED
    assert job.request == valid_request
    assert job.tenant == "default"
    assert [event.kind for event in job.events] == ["created"]
    assert broker.drain() == [(SUBMIT_TASK, [job_id, 0])]


def test_submit_accepts_a_parsed_request(
    client: FluxfarmClient, broker: Any, valid_request: dict[str, Any]
) -> None:
    job_id = client.submit(parse_request(valid_request))

    assert client.get(job_id).request == valid_request
    assert broker.size() == 1


def test_submit_logs_one_queued_line_with_job_and_task(
    client: FluxfarmClient, logs: list[EventDict], valid_request: dict[str, Any]
) -> None:
    job_id = client.submit(valid_request)

    [line] = logs
    assert line["event"] == "job.queued"
    assert line["published"] is True
    assert line["duration_ms"] >= 0
    job = client.get(job_id)
    assert (line["job_id"], line["task_uuid"]) == (job.id, job.task_uuid)


def test_invalid_request_lists_every_issue_and_stores_and_publishes_nothing(
    client: FluxfarmClient, broker: Any
) -> None:
    with pytest.raises(RequestInvalid) as raised:
        client.submit(
            {"positivePrompt": "", "width": 1000, "height": 768, "steps": 4},
            idempotency_key="k" * 256,
            deadline_s=-1,
        )

    assert {(i.field, i.rule) for i in raised.value.issues} == {
        ("positivePrompt", "min_length"),
        ("width", "multiple_of_16"),
        ("steps", "unknown_parameter"),
        ("idempotency_key", "length"),
        ("deadline_s", "range"),
    }
    assert client.store.count_by_state() == {}
    assert broker.size() == 0


def test_options_alone_can_make_a_valid_request_invalid(
    client: FluxfarmClient, valid_request: dict[str, Any]
) -> None:
    with pytest.raises(RequestInvalid) as raised:
        client.submit(valid_request, idempotency_key="", deadline_s=1e308)

    assert [i.field for i in raised.value.issues] == ["idempotency_key", "deadline_s"]
    assert client.store.count_by_state() == {}


def test_idempotent_repeat_returns_the_same_job_and_publishes_once(
    client: FluxfarmClient, broker: Any, logs: list[EventDict], valid_request: dict[str, Any]
) -> None:
    first = client.submit(valid_request, idempotency_key="order-17")
    again = client.submit(dict(valid_request), idempotency_key="order-17")

    assert again == first
    assert [(line["created"], line["published"]) for line in logs] == [(True, True), (False, False)]
    assert broker.drain() == [(SUBMIT_TASK, [first, 0])]


def test_same_key_with_a_different_request_is_a_conflict(
    client: FluxfarmClient, broker: Any, valid_request: dict[str, Any]
) -> None:
    first = client.submit(valid_request, idempotency_key="order-17")

    with pytest.raises(IdempotencyConflict) as raised:
        client.submit({**valid_request, "seed": 7}, idempotency_key="order-17")

    assert raised.value.job_id == first
    assert broker.size() == 1


def test_unreachable_broker_still_commits_the_row_and_returns_its_id(
    settings: Settings, logs: list[EventDict], valid_request: dict[str, Any]
) -> None:
    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with FluxfarmClient(down) as client:
        started = time.monotonic()
        job_id = client.submit(valid_request)

        assert time.monotonic() - started < 10
        assert client.get(job_id).state is JobState.QUEUED
    failed = [line for line in logs if line["event"] == "job.publish_failed"]
    assert failed[0]["job_id"] == job_id
    assert failed[0]["log_level"] == "warning"
    assert [line["published"] for line in logs if line["event"] == "job.queued"] == [False]


def test_a_batch_against_an_unreachable_broker_is_committed_and_each_job_logged(
    settings: Settings, logs: list[EventDict], valid_request: dict[str, Any]
) -> None:
    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with FluxfarmClient(down) as client:
        job_ids = client.submit_many([valid_request] * 12)

        assert {client.get(job_id).state for job_id in job_ids} == {JobState.QUEUED}
    # the reaper republishes queued jobs whose message never went out
    failed = [line["job_id"] for line in logs if line["event"] == "job.publish_failed"]
    assert failed == job_ids
    queued = [line for line in logs if line["event"] == "job.queued"]
    assert [(line["job_id"], line["published"]) for line in queued] == [
        (job_id, False) for job_id in job_ids
    ]


def test_deadline_defaults_to_settings_and_can_be_given(
    client: FluxfarmClient, valid_request: dict[str, Any]
) -> None:
    default = client.get(client.submit(valid_request))
    short = client.get(client.submit(valid_request, deadline_s=30))

    assert (default.deadline_at - default.created_at).total_seconds() == pytest.approx(900)
    assert (short.deadline_at - short.created_at).total_seconds() == pytest.approx(30)


def test_tenants_see_only_their_own_jobs(
    settings: Settings, client: FluxfarmClient, valid_request: dict[str, Any]
) -> None:
    with FluxfarmClient(settings, tenant="acme", store=client.store) as acme:
        theirs = acme.submit(valid_request, idempotency_key="shared-key")
        ours = client.submit(valid_request, idempotency_key="shared-key")

        assert ours != theirs
        assert acme.get(theirs).tenant == "acme"
        with pytest.raises(JobNotFound):
            client.get(theirs)
        with pytest.raises(JobNotFound):
            client.cancel(theirs)
        with pytest.raises(JobNotFound):
            client.wait(theirs, timeout=0.1)
        assert acme.get(theirs).state is JobState.QUEUED


def test_wait_times_out_on_a_job_that_stays_queued(
    client: FluxfarmClient, valid_request: dict[str, Any]
) -> None:
    job_id = client.submit(valid_request)

    started = time.monotonic()
    with pytest.raises(WaitTimedOut) as raised:
        client.wait(job_id, timeout=0.3, poll_interval=0.05)

    assert 0.3 <= time.monotonic() - started < 2
    assert (raised.value.job_id, raised.value.state) == (job_id, "queued")


def test_wait_returns_the_job_once_terminal(
    client: FluxfarmClient, valid_request: dict[str, Any]
) -> None:
    job_id = client.submit(valid_request)
    client.store.fail(job_id, Failure(reason="provider", message="refused", code="badPrompt"))

    job = client.wait(job_id, timeout=1)

    assert job.state is JobState.FAILED
    assert job.failure_code == "badPrompt"
    assert [event.kind for event in job.events] == ["created", "failed"]


def test_cancel_of_a_queued_job_cancels_it_once(
    client: FluxfarmClient, valid_request: dict[str, Any]
) -> None:
    job_id = client.submit(valid_request)

    canceled = client.cancel(job_id)
    again = client.cancel(job_id)

    assert canceled.state is JobState.CANCELED
    assert canceled.finished_at is not None
    assert again.state is JobState.CANCELED
    assert [event.kind for event in again.events] == ["created", "canceled"]


def test_one_client_serves_many_threads(
    client: FluxfarmClient, broker: Any, valid_request: dict[str, Any]
) -> None:
    def submit(n: int) -> str:
        return client.submit({**valid_request, "seed": n}, idempotency_key=f"key-{n % 4}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(submit, [0, 1, 2, 3] * 2))

    assert ids[:4] == ids[4:]
    assert sorted(broker.job_ids()) == sorted(ids[:4])


class HeldFirstCommit:
    """Holds the store's first commit until released, so that submissions made meanwhile
    gather behind it, as they do under load."""

    def __init__(self, client: FluxfarmClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []
        create_jobs = client.store.create_jobs

        def held(new_jobs: Any, **kwargs: Any) -> Any:
            self.batches.append(len(new_jobs))
            if len(self.batches) == 1:
                self.holding.set()
                self.release.wait(10)
            return create_jobs(new_jobs, **kwargs)

        monkeypatch.setattr(client.store, "create_jobs", held)


def test_submissions_made_together_share_a_commit_and_a_message(
    client: FluxfarmClient,
    broker: Any,
    valid_request: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = HeldFirstCommit(client, monkeypatch)
    with ThreadPoolExecutor(max_workers=8) as pool:
        first = pool.submit(client.submit, valid_request)
        assert held.holding.wait(10)
        rest = [pool.submit(client.submit, {**valid_request, "seed": n}) for n in range(6)]
        time.sleep(0.3)  # the six wait behind the held commit
        held.release.set()
        ids = [first.result(10), *(future.result(10) for future in rest)]

    assert held.batches == [1, 6]
    assert len(set(ids)) == 7
    assert [client.get(job_id).request.get("seed") for job_id in ids[1:]] == list(range(6))
    messages = broker.drain()
    assert messages[0] == (SUBMIT_TASK, [ids[0], 0])
    assert messages[1][0] == SUBMIT_MANY_TASK
    assert sorted(job_id for job_id, _ in messages[1][1][0]) == sorted(ids[1:])


def test_a_conflicting_key_among_submissions_made_together_fails_only_its_caller(
    client: FluxfarmClient,
    broker: Any,
    valid_request: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = client.submit(valid_request, idempotency_key="taken")
    broker.drain()
    held = HeldFirstCommit(client, monkeypatch)
    with ThreadPoolExecutor(max_workers=8) as pool:
        first = pool.submit(client.submit, valid_request)
        assert held.holding.wait(10)
        fine = [pool.submit(client.submit, {**valid_request, "seed": n}) for n in range(3)]
        clash = pool.submit(client.submit, {**valid_request, "seed": 99}, "taken")
        same = pool.submit(client.submit, valid_request, "taken")
        time.sleep(0.3)
        held.release.set()
        created = [first.result(10), *(future.result(10) for future in fine)]
        with pytest.raises(IdempotencyConflict):
            clash.result(10)
        assert same.result(10) == taken

    assert len(set(created)) == 4
    assert sorted(broker.job_ids()) == sorted(created)


def test_a_callback_url_is_kept_on_the_job_and_one_off_the_allowed_hosts_is_refused(
    client: FluxfarmClient, broker: Any, valid_request: dict[str, Any]
) -> None:
    url = f"https://{CALLBACK_HOST}/done"
    job_id = client.submit(valid_request, callback_url=url)
    [first, second] = client.submit_many([valid_request] * 2, callback_url=url)
    assert [client.get(j).callback_url for j in (job_id, first, second)] == [url] * 3
    assert broker.size() == 2

    for refused in ("https://evil.example.com/done", "http://10.1.2.3/done", "file:///etc/passwd"):
        with pytest.raises(RequestInvalid) as alone:
            client.submit(valid_request, callback_url=refused)
        with pytest.raises(RequestInvalid) as together:
            client.submit_many([valid_request], callback_url=refused)
        for raised in (alone, together):
            assert [issue.field for issue in raised.value.issues] == ["callbackUrl"]
    assert client.store.count_by_state() == {"queued": 3}
    assert broker.size() == 2


def test_listing_refuses_a_query_it_cannot_run_naming_the_field(
    client: FluxfarmClient, valid_request: dict[str, Any]
) -> None:
    job_id = client.submit(valid_request)
    assert [job.id for job in client.list_jobs(JobQuery()).jobs] == [job_id]

    naive = datetime(2030, 1, 1)
    east = timezone(timedelta(hours=2))
    for query, issue in (
        (JobQuery(limit=0), ("limit", "range")),
        (JobQuery(limit=501), ("limit", "range")),
        (JobQuery(created_after=naive), ("createdAfter", "timezone")),
        (JobQuery(created_before=datetime(1, 1, 1, 1, tzinfo=east)), ("createdBefore", "range")),
    ):
        with pytest.raises(RequestInvalid) as raised:
            client.list_jobs(query)
        assert [(i.field, i.rule) for i in raised.value.issues] == [issue]


def test_an_idempotency_key_stands_for_the_callback_url_and_priority_too(
    client: FluxfarmClient, valid_request: dict[str, Any]
) -> None:
    url = f"https://{CALLBACK_HOST}/done"
    job_id = client.submit(valid_request, "order-7", callback_url=url, priority=3)

    assert client.submit(valid_request, "order-7", callback_url=url, priority=3) == job_id
    for other, priority in ((f"https://{CALLBACK_HOST}/elsewhere", 3), (None, 3), (url, 0)):
        with pytest.raises(IdempotencyConflict):
            client.submit(valid_request, "order-7", callback_url=other, priority=priority)
    assert client.store.count_by_state() == {"queued": 1}
