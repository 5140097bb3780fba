"""The callback outbox: the terminal transition itself writes the event; claims, attempts,
replays; tenants' secrets made once and rotated with an overlap."""

from __future__ import annotations

from datetime import timedelta

from farmdomain.callbacks import Attempt, CallbackStatus, outcome
from farmdomain.values import Failure, IncomingResult
from jobstore.callback_events import AttemptRecord, CallbackOutbox
from jobstore.callback_secrets import CallbackSecrets
from jobstore.creation import NewJob
from jobstore.store import JobStore
from tests.jobstore.conftest import Clock, keep_images

PARAMS = {"positivePrompt": "a fox", "width": 1024, "height": 1024, "numberResults": 1}


def _job_with_callback(store: JobStore, url: str | None) -> str:
    [(job, _)] = store.create_jobs([NewJob(PARAMS, callback_url=url)], tenant="acme", deadline_s=60)
    return job.id


def test_terminal_transition_writes_one_event_and_attempts_follow_the_schedule(
    store: JobStore, clock: Clock
) -> None:
    outbox = CallbackOutbox(store.engine, clock)
    with_url = _job_with_callback(store, "https://hooks.example.com/in")
    without = _job_with_callback(store, None)
    assert store.fail(with_url, Failure("provider", "no"))
    assert store.fail(without, Failure("provider", "no"))
    assert outbox.due(resend_after_s=60) == [with_url]
    [event] = outbox.claim([with_url, without], lease_s=30)
    assert event.type == "job.failed"
    assert event.tries == 0
    # a first attempt's claim reads the job for the body
    assert event.job is not None
    assert event.job.id == with_url
    # held by its attempt: neither claimable nor due until the lease ends
    assert outbox.claim([with_url], lease_s=30) == []
    assert outbox.due(resend_after_s=60) == []
    failed = Attempt(clock(), 500, 3.0, "down", None)
    status, delay = outcome(failed, [0.0, 5.0], event.tries)
    assert status is CallbackStatus.PENDING
    assert delay is not None
    outbox.record([AttemptRecord(event, b'{"x":1}', failed, status, delay)])
    clock.advance(10)
    [again] = outbox.claim([with_url], lease_s=30)
    assert again.tries == 1
    assert again.body == b'{"x":1}'
    # one with a body needs no job read
    assert again.job is None
    status, delay = outcome(Attempt(clock(), 500, 3.0, "down", None), [0.0, 5.0], again.tries)
    assert status is CallbackStatus.DEAD
    last = Attempt(clock(), 500, 3.0, "down", None)
    outbox.record([AttemptRecord(again, b'{"x":2}', last, status, delay)])
    dead = outbox.get(with_url, tenant="acme")
    assert dead is not None
    assert dead.status is CallbackStatus.DEAD
    assert len(dead.attempts) == 2
    assert dead.body == b'{"x":1}'
    assert [e.job_id for e in outbox.events(failed=True)] == [with_url]
    assert outbox.replay(since=dead.created_at) == [with_url]
    assert outbox.due(resend_after_s=60) == [with_url]


def test_a_tenant_secret_is_made_once_and_both_sign_during_a_rotation(
    store: JobStore, clock: Clock
) -> None:
    secrets = CallbackSecrets(store.engine, clock)
    first = secrets.current("acme")
    assert first.startswith("whsec_")
    assert secrets.current("acme") == first
    second = secrets.rotate("acme", overlap_s=60)
    assert secrets.signing("acme") == [second, first]
    clock.advance(61)
    assert secrets.signing("acme") == [second]


def test_a_callback_url_given_at_creation_is_kept_and_its_job_alone_calls_back(
    store: JobStore, clock: Clock
) -> None:
    outbox = CallbackOutbox(store.engine, clock)
    url = "https://hooks.example.com/in?from=fluxfarm"
    alone = _job_with_callback(store, url)
    created = store.create_jobs(
        [NewJob(PARAMS, callback_url=url), NewJob(PARAMS, callback_url=url), NewJob(PARAMS)],
        tenant="acme",
        deadline_s=60,
    )
    assert [job.callback_url for job, _ in created] == [url, url, None]
    completed, canceled, silent = (job.id for job, _ in created)
    read_back = [store.get(j).callback_url for j in (alone, completed, canceled, silent)]
    assert read_back == [url, url, url, None]

    assert store.fail(alone, Failure("provider", "no"))
    assert store.claim(completed, 0) is not None
    assert store.mark_submitted(completed, {"attempt": 1})
    task = store.get(completed).task_uuid
    store.record_result(
        IncomingResult(task, "img-1", "https://im.example/1.jpg", None, 1, None, None), "webhook"
    )
    # no event before the image is stored: the job is not terminal yet
    assert outbox.get(completed) is None
    keep_images(store, completed)
    store.cancel(canceled, tenant="acme")
    store.cancel(silent, tenant="acme")

    kinds: dict[str, str] = {}
    for job_id in (alone, completed, canceled):
        event = outbox.get(job_id, tenant="acme")
        assert event is not None
        assert (event.url, event.status) == (url, CallbackStatus.PENDING)
        kinds[job_id] = event.type
    assert kinds == {alone: "job.failed", completed: "job.succeeded", canceled: "job.canceled"}
    assert outbox.get(silent) is None
    assert outbox.get(alone, tenant="globex") is None


def test_a_due_event_is_sent_once_until_its_message_is_overdue(
    store: JobStore, clock: Clock
) -> None:
    outbox = CallbackOutbox(store.engine, clock)
    job_id = _job_with_callback(store, "https://hooks.example.com/in")
    assert store.fail(job_id, Failure("provider", "no"))

    assert outbox.due(resend_after_s=60) == [job_id]
    # its message is queued behind others: the next drives send no second one
    clock.advance(30)
    assert outbox.due(resend_after_s=60) == []
    # a message lost on the way is sent again once overdue
    clock.advance(30)
    assert outbox.due(resend_after_s=60) == [job_id]
    # a retry's countdown message counts as sent, as of when it falls due
    [event] = outbox.claim([job_id], lease_s=30)
    failed = Attempt(clock(), 500, 3.0, "down", None)
    arrives = clock.now + timedelta(seconds=5)
    outbox.record([AttemptRecord(event, b"{}", failed, CallbackStatus.PENDING, 5.0, arrives)])
    clock.advance(60)
    assert outbox.due(resend_after_s=60) == []
    clock.advance(5)
    assert outbox.due(resend_after_s=60) == [job_id]
