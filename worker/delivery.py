"""Delivering callbacks: each terminal event of the outbox sent, signed, until the receiver
takes it, says it is gone, or the retry schedule is spent.

An attempt claims its event under a lease, so two messages for one event (a retry's
countdown and beat's drive) make one attempt, and a worker killed mid-attempt leaves an
event that comes due again when its lease ends. Beat's drive
(FLUXFARM_CALLBACK_DRIVE_INTERVAL_S) is what sends first attempts too: the row is written by
the database trigger inside whichever statement made the job terminal (webhook, poll,
reaper, cancel), and no one of those code paths sees every transition, while a drive
sees every due row, crash or not, at the cost of one indexed query per interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from farmdomain.broker import CALLBACK_QUEUE, DELIVER_TASK
from farmdomain.callbacks import Attempt, CallbackEvent, CallbackStatus, body, outcome
from farmdomain.metrics import metrics
from farmdomain.views import JobView
from jobstore.callback_events import CallbackOutbox
from jobstore.callback_secrets import CallbackSecrets
from worker.context import WorkerContext

if TYPE_CHECKING:
    from celery import Celery

    from worker.app import FarmTask

log = structlog.get_logger(__name__)

# a retry due within this is sent as a countdown message; a later one is left to the drive,
# since a broker holds a countdown message unacknowledged until it is due
COUNTDOWN_MAX_S = 60.0
# the lease outlasts a whole attempt (bounded by FLUXFARM_CALLBACK_TIMEOUT_S) by this much
LEASE_MARGIN_S = 5.0


@dataclass(frozen=True)
class Delivery:
    """What one attempt of an event did, and when the next one is due (None: no next)."""

    job_id: str
    attempt: Attempt
    status: CallbackStatus
    next_in_s: float | None


def deliver(context: WorkerContext, job_id: str) -> Delivery | None:
    """One attempt of the job's event if it is due and no other attempt holds it."""
    settings, engine = context.settings, context.store.engine
    outbox = CallbackOutbox(engine)
    event = outbox.claim(job_id, settings.callback_timeout_s + LEASE_MARGIN_S)
    if event is None:
        return None
    sent = event.body or _body(context, event)
    secrets = CallbackSecrets(engine).signing(event.tenant)
    attempt = context.callbacks.send(event.url, event.tenant, event.webhook_id, sent, secrets)
    status, next_in_s = outcome(attempt, settings.callback_retry_schedule_s, event.tries)
    outbox.record(event, sent, attempt, status, next_in_s)
    _count(event, attempt, status)
    log.info(
        "callback.attempt",
        job_id=job_id,
        status=status.value,
        status_code=attempt.status_code,
        error=attempt.error,
        next_in_s=next_in_s,
    )
    return Delivery(job_id, attempt, status, next_in_s)


def _body(context: WorkerContext, event: CallbackEvent) -> bytes:
    """The event's body, built by its first attempt and kept for the rest."""
    job = context.store.get(event.job_id, details=True)
    lifetime_s = context.settings.results_url_ttl_s
    results = context.copier.results
    view = JobView.from_job(job, lambda key: results.url(key, lifetime_s))
    return body(event.type, event.created_at, view.model_dump(mode="json"))


def _count(event: CallbackEvent, attempt: Attempt, status: CallbackStatus) -> None:
    recorded = metrics()
    if attempt.delivered:
        kind = "delivered"
        delay = (attempt.at - event.created_at).total_seconds()
        recorded.callback_delivery.observe(max(delay, 0.0))
    elif attempt.gone:
        kind = "gone"
    else:
        kind = "unanswered" if attempt.status_code is None else "rejected"
    recorded.callback_attempts.labels(kind).inc()
    if status is CallbackStatus.DEAD:
        recorded.callbacks_dead.inc()


def publish_delivery(app: Celery, job_id: str, countdown: float | None = None) -> None:
    """Ask a worker for an attempt of the job's callback."""
    options: dict[str, Any] = {"queue": CALLBACK_QUEUE}
    if countdown:
        options["countdown"] = countdown
    app.send_task(DELIVER_TASK, args=(job_id,), **options)


def deliver_callback(task: FarmTask, job_id: str) -> None:
    """The delivery task: one attempt; a retry due soon is sent as a countdown message."""
    done = deliver(task.context, job_id)
    if done is not None and done.next_in_s is not None and done.next_in_s <= COUNTDOWN_MAX_S:
        publish_delivery(task.context.app, job_id, countdown=done.next_in_s)


def drive_callbacks(task: FarmTask) -> None:
    """Beat's drive: an attempt asked for every due event."""
    context = task.context
    due = CallbackOutbox(context.store.engine).due()
    for job_id in due:
        publish_delivery(context.app, job_id)
    if due:
        log.info("callback.drive", due=len(due))
