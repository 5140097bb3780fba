"""The callback outbox: the terminal transition itself writes the event; claims, attempts,
replays; tenants' secrets made once and rotated with an overlap."""

from __future__ import annotations

from sqlalchemy import update

from farmdomain.callbacks import Attempt, CallbackStatus, outcome
from farmdomain.values import Failure
from jobstore.callback_events import CallbackOutbox
from jobstore.callback_secrets import CallbackSecrets
from jobstore.schema import jobs
from jobstore.store import JobStore
from tests.jobstore.conftest import Clock

PARAMS = {"positivePrompt": "a fox", "width": 1024, "height": 1024, "numberResults": 1}


def _job_with_callback(store: JobStore, url: str | None) -> str:
    job, _ = store.create_job(PARAMS, tenant="acme", deadline_s=60)
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job.id).values(callback_url=url))
    return job.id


def test_terminal_transition_writes_one_event_and_attempts_follow_the_schedule(
    store: JobStore, clock: Clock
) -> None:
    outbox = CallbackOutbox(store.engine, clock)
    with_url = _job_with_callback(store, "https://hooks.example.com/in")
    without = _job_with_callback(store, None)
    assert store.fail(with_url, Failure("provider", "no"))
    assert store.fail(without, Failure("provider", "no"))
    assert outbox.due() == [with_url]
    event = outbox.claim(with_url, lease_s=30)
    assert event is not None
    assert event.type == "job.failed"
    assert event.tries == 0
    # held by its attempt: neither claimable nor due until the lease ends
    assert outbox.claim(with_url, lease_s=30) is None
    assert outbox.due() == []
    failed = Attempt(clock(), 500, 3.0, "down", None)
    status, delay = outcome(failed, [0.0, 5.0], event.tries)
    assert status is CallbackStatus.PENDING
    assert delay is not None
    outbox.record(event, b'{"x":1}', failed, status, delay)
    clock.advance(10)
    again = outbox.claim(with_url, lease_s=30)
    assert again is not None
    assert again.tries == 1
    assert again.body == b'{"x":1}'
    status, delay = outcome(Attempt(clock(), 500, 3.0, "down", None), [0.0, 5.0], again.tries)
    assert status is CallbackStatus.DEAD
    outbox.record(again, b'{"x":2}', Attempt(clock(), 500, 3.0, "down", None), status, delay)
    dead = outbox.get(with_url, tenant="acme")
    assert dead is not None
    assert dead.status is CallbackStatus.DEAD
    assert len(dead.attempts) == 2
    assert dead.body == b'{"x":1}'
    assert [e.job_id for e in outbox.events(failed=True)] == [with_url]
    assert outbox.replay(since=dead.created_at) == [with_url]
    assert outbox.due() == [with_url]


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
