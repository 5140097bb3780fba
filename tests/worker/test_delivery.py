"""Batched callback delivery on a real store and real receivers: one message's events
claimed together, sent together and each recorded as its own answer made it; a crash
between sending and recording loses none of them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from farmdomain.callbacks import CallbackStatus
from farmdomain.settings import Settings
from farmdomain.values import Failure, utcnow
from jobstore.callback_events import CallbackOutbox
from jobstore.callback_secrets import CallbackSecrets
from jobstore.creation import NewJob
from jobstore.migrations import upgrade
from tests.worker.conftest import Receiver
from worker import delivery
from worker.app import create_app
from worker.context import WorkerContext

PARAMS = {"positivePrompt": "a fox", "width": 512, "height": 512, "numberResults": 1}
# the answer each endpoint gives, as an attempt records it: delivered, gone, a timeout, a 500
ENDPOINTS = ("/hook", "/gone", "/slow", "/broken")


@pytest.fixture
def context(tmp_path: Path, receiver: tuple[Receiver, str]) -> Iterator[WorkerContext]:
    found, url = receiver
    settings = Settings(
        data_dir=tmp_path,
        webhook_secret="delivery-secret",
        runware_api_key="unused-key",
        callback_allowed_hosts=url.removeprefix("http://"),
        callback_timeout_s=1.0,
        callback_retry_schedule_s=[0.0, 5.0, 300.0],
    )
    upgrade(settings.resolved_database_url())
    made = create_app(settings).context
    found.secret = CallbackSecrets(made.store.engine).current("acme")
    yield made
    made.close()


def _terminal_jobs(context: WorkerContext, urls: list[str]) -> list[str]:
    created = context.store.create_jobs(
        [NewJob(PARAMS, callback_url=url) for url in urls], tenant="acme", deadline_s=600
    )
    for job, _ in created:
        assert context.store.fail(job.id, Failure("provider", "no"))
    return [job.id for job, _ in created]


def test_a_batch_records_each_attempt_as_its_own_answer_made_it(
    context: WorkerContext, receiver: tuple[Receiver, str]
) -> None:
    found, url = receiver
    ok, gone, slow, broken = _terminal_jobs(context, [url + path for path in ENDPOINTS])
    records = delivery.deliver(context, [ok, gone, slow, broken])
    assert [r.event.job_id for r in records] == [ok, gone, slow, broken]
    outbox = CallbackOutbox(context.store.engine)
    events = {job_id: outbox.get(job_id) for job_id in (ok, gone, slow, broken)}
    statuses = {job_id: e.status for job_id, e in events.items() if e is not None}
    assert statuses == {
        ok: CallbackStatus.DELIVERED,
        gone: CallbackStatus.GONE,
        slow: CallbackStatus.PENDING,
        broken: CallbackStatus.PENDING,
    }
    answers = {}
    for job_id, event in events.items():
        assert event is not None
        [attempt] = event.attempts
        assert event.tries == 1
        assert event.body is not None
        answers[job_id] = (attempt.status_code, attempt.error)
    assert answers == {
        ok: (200, None),
        gone: (410, None),
        slow: (None, "timeout: no whole answer within 1s"),
        broken: (500, None),
    }
    assert [payload["data"]["id"] for payload in found.verified] == [ok]
    delivered = events[ok]
    assert delivered is not None
    assert delivered.delivered_at == delivered.attempts[0].at
    # the two retries are 5 s away (±10 %), sent as one countdown message: the drive sends
    # no other for them until that message is overdue
    for job_id in (slow, broken):
        event = events[job_id]
        assert event is not None
        wait = event.next_attempt_at - event.attempts[0].at
        assert timedelta(seconds=4.5) <= wait <= timedelta(seconds=5.5)
    soon = CallbackOutbox(context.store.engine, lambda: utcnow() + timedelta(seconds=10))
    assert soon.due(delivery.RESEND_AFTER_S) == []
    later = CallbackOutbox(context.store.engine, lambda: utcnow() + timedelta(seconds=70))
    assert sorted(later.due(delivery.RESEND_AFTER_S)) == sorted([slow, broken])


def test_a_crash_between_sending_and_recording_loses_no_event_of_the_batch(
    context: WorkerContext, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    found, url = receiver
    job_ids = _terminal_jobs(context, [f"{url}/hook"] * 3)

    def crash(_: CallbackOutbox, records: object) -> None:
        raise SystemExit("killed before recording")

    monkeypatch.setattr(CallbackOutbox, "record", crash)
    with pytest.raises(SystemExit):
        delivery.deliver(context, job_ids)
    monkeypatch.undo()
    # the fault landed after the sends: the receiver has them, the store has no attempt
    assert sorted(p["data"]["id"] for p in found.verified) == sorted(job_ids)
    outbox = CallbackOutbox(context.store.engine)
    for job_id in job_ids:
        event = outbox.get(job_id)
        assert event is not None
        assert (event.status, event.attempts) == (CallbackStatus.PENDING, [])
    # held by the dead attempt's lease, and due again once it ends
    assert delivery.deliver(context, job_ids) == []
    lease = timedelta(seconds=context.settings.callback_timeout_s + delivery.LEASE_MARGIN_S)
    after = CallbackOutbox(context.store.engine, lambda: utcnow() + lease)
    assert sorted(after.due(delivery.RESEND_AFTER_S)) == sorted(job_ids)
