"""Delivering callbacks: the terminal events of the outbox sent, signed, until each
receiver takes its event, says it is gone, or the retry schedule is spent.

A delivery message carries up to BATCH_MAX events. Its task claims them in one statement
under a lease, so two messages for one event (a retry's countdown and beat's drive) make
one attempt, and a worker killed mid-attempt leaves events that come due again when their
lease ends; it sends them all at once on the sender's event loop and records every
attempt in one transaction. Beat's drive (FLUXFARM_CALLBACK_DRIVE_INTERVAL_S) is what
sends first attempts too: the row is written by the database trigger inside whichever
statement made the job terminal (webhook, poll, reaper, cancel), and no one of those code
paths sees every transition, while a drive sees every due row, crash or not, at the cost
of one indexed query per interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from farmdomain.broker import CALLBACK_QUEUE, DELIVER_TASK
from farmdomain.callbacks import Attempt, CallbackEvent, CallbackStatus, body, outcome
from farmdomain.metrics import metrics
from farmdomain.values import utcnow
from farmdomain.views import JobView
from jobstore.callback_events import AttemptRecord, CallbackOutbox
from jobstore.callback_secrets import CallbackSecrets
from worker.callbacks import BATCH_MAX, Outgoing
from worker.context import WorkerContext

if TYPE_CHECKING:
    from celery import Celery

    from worker.app import FarmTask

log = structlog.get_logger(__name__)

# a retry due within this is sent as a countdown message; a later one is left to the drive,
# since a broker holds a countdown message unacknowledged until it is due
COUNTDOWN = timedelta(seconds=60)
# the lease outlasts a whole attempt (bounded by FLUXFARM_CALLBACK_TIMEOUT_S) by this much
LEASE_MARGIN_S = 5.0
# a due event whose delivery message went this long without an attempt is sent again by
# the drive: the message may be lost (a broker restart); until then it is only queued
RESEND_AFTER_S = 60.0


def deliver(context: WorkerContext, job_ids: Sequence[str]) -> list[AttemptRecord]:
    """One attempt of each of the jobs' events that is due and held by no other attempt;
    the retries due soon are sent as countdown messages, one per step of the schedule."""
    with context.callbacks.turns:
        records, countdowns = _attempts(context, job_ids)
    for countdown, job_ids_due in countdowns:
        publish_delivery(context.app, job_ids_due, countdown=countdown)
    for record in records:
        _count(record)
        log.info(
            "callback.attempt",
            job_id=record.event.job_id,
            status=record.status.value,
            status_code=record.attempt.status_code,
            error=record.attempt.error,
            next_in_s=record.next_in_s,
        )
    return records


def _attempts(
    context: WorkerContext, job_ids: Sequence[str]
) -> tuple[list[AttemptRecord], list[tuple[float, list[str]]]]:
    """Claim, send, record: the attempts made, and the countdown messages to send."""
    settings, engine = context.settings, context.store.engine
    outbox = CallbackOutbox(engine)
    events = outbox.claim(job_ids, settings.callback_timeout_s + LEASE_MARGIN_S)
    if not events:
        return [], []
    keys = CallbackSecrets(engine)
    secrets = {tenant: keys.signing(tenant) for tenant in {e.tenant for e in events}}
    bodies = [event.body or _body(context, event) for event in events]
    attempts = context.callbacks.send(
        [
            Outgoing(event.url, event.tenant, event.webhook_id, sent, secrets[event.tenant])
            for event, sent in zip(events, bodies, strict=True)
        ]
    )
    schedule = settings.callback_retry_schedule_s
    records, countdowns = _countdowns(
        [
            AttemptRecord(event, sent, attempt, *outcome(attempt, schedule, event.tries))
            for event, sent, attempt in zip(events, bodies, attempts, strict=True)
        ]
    )
    outbox.record(records)
    return records, countdowns


def _countdowns(
    records: list[AttemptRecord],
) -> tuple[list[AttemptRecord], list[tuple[float, list[str]]]]:
    """The retries due within COUNTDOWN as countdown messages, one per step of the
    schedule (their jitter apart, they are due together), each arriving when the last of
    its events is due; the records, marked with when their message arrives, so that the
    drive sends no other meanwhile."""
    now = utcnow()
    steps: dict[int, list[AttemptRecord]] = {}
    for r in records:
        if r.next_at is not None and r.next_at - r.attempt.at <= COUNTDOWN:
            steps.setdefault(r.event.tries, []).append(r)
    arrivals: dict[str, datetime] = {}
    countdowns: list[tuple[float, list[str]]] = []
    for group in steps.values():
        arrives = max(r.next_at or now for r in group)
        countdowns.append(
            (max((arrives - now).total_seconds(), 0.0), [r.event.job_id for r in group])
        )
        arrivals.update(dict.fromkeys((r.event.job_id for r in group), arrives))
    marked = [replace(r, message_at=arrivals.get(r.event.job_id)) for r in records]
    return marked, countdowns


def _body(context: WorkerContext, event: CallbackEvent) -> bytes:
    """The event's body, built by its first attempt from the job its claim read, and kept
    for the rest."""
    assert event.job is not None  # a claim reads the job of every event without a body
    lifetime_s = context.settings.results_url_ttl_s
    results = context.copier.results
    view = JobView.from_job(event.job, lambda key: results.url(key, lifetime_s))
    return body(event.type, event.created_at, view.model_dump(mode="json"))


def _count(record: AttemptRecord) -> None:
    recorded = metrics()
    attempt: Attempt = record.attempt
    if attempt.delivered:
        kind = "delivered"
        delay = (attempt.at - record.event.created_at).total_seconds()
        recorded.callback_delivery.observe(max(delay, 0.0))
    elif attempt.gone:
        kind = "gone"
    else:
        kind = "unanswered" if attempt.status_code is None else "rejected"
    recorded.callback_attempts.labels(kind).inc()
    if record.status is CallbackStatus.DEAD:
        recorded.callbacks_dead.inc()


def publish_delivery(app: Celery, job_ids: Sequence[str], countdown: float | None = None) -> None:
    """Ask a worker for an attempt of the jobs' callbacks, BATCH_MAX to a message."""
    options: dict[str, Any] = {"queue": CALLBACK_QUEUE}
    if countdown:
        options["countdown"] = countdown
    for start in range(0, len(job_ids), BATCH_MAX):
        app.send_task(DELIVER_TASK, args=tuple(job_ids[start : start + BATCH_MAX]), **options)


def deliver_callback(task: FarmTask, *job_ids: str) -> None:
    """The delivery task: one attempt of each event its message names (one, or a batch)."""
    deliver(task.context, job_ids)


def drive_callbacks(task: FarmTask) -> None:
    """Beat's drive: an attempt asked for every due event."""
    context = task.context
    due = CallbackOutbox(context.store.engine).due(RESEND_AFTER_S)
    publish_delivery(context.app, due)
    if due:
        log.info("callback.drive", due=len(due))
