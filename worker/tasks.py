"""The submit task: claim jobs, POST them to Runware with their webhookURLs, record `submitted`."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

from farmdomain.broker import SUBMIT_QUEUE, SUBMIT_TASK
from farmdomain.errors import ProviderError, TransientProviderError
from farmdomain.jobs import FailureReason, Job, JobState
from farmdomain.values import Failure, utcnow
from jobstore.bodies import record
from jobstore.copies import keys_to_copy
from runware_edge import instrumentation
from runware_edge.bodies import parse_body
from runware_edge.client import inference_task
from runware_edge.tokens import webhook_url
from worker.backoff import backoff_s
from worker.context import Claim, WorkerContext
from worker.copying import publish_copies
from worker.uploads import upload_endpoint

if TYPE_CHECKING:
    from worker.app import FarmTask

log = structlog.get_logger(__name__)


def submit(task: FarmTask, job_id: str, expected_attempts: int = 0) -> None:
    """Submit one job, in one request with whatever jobs this process's other threads hold;
    a message whose attempt already ran claims nothing and returns."""
    task.context.batcher.run((job_id, expected_attempts))


def submit_many(task: FarmTask, claims: list[list[Any]]) -> None:
    """Submit the jobs of one message, [[job_id, expected_attempts], ...], as `submit` does
    each: they go to Runware together, with whatever else this process holds."""
    task.context.batcher.run_all([(str(job_id), int(attempts)) for job_id, attempts in claims])


def submit_claims(context: WorkerContext, claims: list[Claim], admitted: bool) -> list[None]:
    """The batchers' handler: one batch of claims, one result per claim."""
    submit_batch(context, claims, admitted)
    return [None] * len(claims)


def submit_batch(context: WorkerContext, claims: list[Claim], admitted: bool = False) -> None:
    """Claim the jobs, POST the ones still due in one request, record each outcome; the
    dispatcher's claims are `admitted`: they pass a backlog's hold on first claims."""
    taken = context.store.claim_many(claims, admitted=admitted)
    # a first claim its tenant's budget had no room for comes back failed, never submitted
    claimed = [job for job in taken if job.state is JobState.SUBMITTING]
    for job in taken:
        if job.state is JobState.FAILED:
            _log_failed(
                job.id,
                Failure(job.failure_reason or "", job.failure_message or "", job.failure_code),
            )
    won = {job.id for job in taken}
    for job_id, expected_attempts in claims:
        if job_id not in won:
            log.info("submit.skipped", job_id=job_id, expected_attempts=expected_attempts)
    due = _due(context, claimed)
    if due:
        _post(context, due)


def _due(context: WorkerContext, claimed: list[Job]) -> list[Job]:
    """The claimed jobs that may still be sent: in time, and within the daily budget."""
    due = []
    for job in claimed:
        if utcnow() >= job.deadline_at:
            _fail(context, job, Failure(FailureReason.TIMEOUT, "deadline passed before submission"))
        else:
            due.append(job)
    refused = _over_budget(context, due)
    settings = context.settings
    for job in refused:
        message = f"the daily budget of ${settings.spend_daily_budget_usd:g} would be passed"
        _fail(context, job, Failure(FailureReason.QUOTA, message, code="dailyBudgetExceeded"))
    refused_ids = {job.id for job in refused}
    return [job for job in due if job.id not in refused_ids]


def _over_budget(context: WorkerContext, due: list[Job]) -> list[Job]:
    """The first attempts among `due` that today's committed spend has no room for.

    Only a first attempt is held to the budget: a retry resends a task Runware may already
    have accepted, at no further cost. Claims are committed before this check, so jobs
    claimed at once by other workers each see the others: near the cap more may be
    refused than strictly needed, but the budget is never passed on estimates.
    """
    settings = context.settings
    first_attempts = [job for job in due if job.attempts == 1]
    if not settings.enforce_daily_budget or not first_attempts:
        return []
    now = utcnow()
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    excess = context.store.committed_spend_since(day_start) - Decimal(
        str(settings.spend_daily_budget_usd)
    )
    refused = []
    # the batch's latest jobs give way first, so the earliest keep their place
    for job in reversed(first_attempts):
        if excess <= 0:
            break
        refused.append(job)
        excess -= job.estimate_usd
    return refused


def _post(context: WorkerContext, due: list[Job]) -> None:
    secret = context.webhook_secrets[0]
    base_url = context.settings.public_base_url
    ttl_s = context.settings.runware_ttl_s
    results = context.copier.results
    tasks = [
        inference_task(
            job.task_uuid,
            job.request,
            webhook_url(base_url, job.task_uuid, secret),
            ttl_s=ttl_s,
            upload_url=upload_endpoint(context.settings, results, job.id, job.request),
        )
        for job in due
    ]
    context.hooks.after_claim(due)
    started = time.perf_counter()
    batch = context.runware.submit_batch(tasks)
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    context.hooks.after_post(due)
    if batch.data:
        parsed = parse_body({"data": batch.data})
        publish_copies(context.app, keys_to_copy([parsed], [record(context.store, parsed, "ack")]))
    accepted = [job for job in due if job.task_uuid not in batch.failures]
    for attempt in sorted({job.attempts for job in accepted}):
        detail = {"attempt": attempt, "duration_ms": duration_ms, "batch": len(due)}
        ids = [job.id for job in accepted if job.attempts == attempt]
        context.store.mark_submitted_many(ids, detail)
    _pause_claims(context, batch.failures.values())
    # the accepted jobs' log lines are their `submitted` transitions; failures get their own
    for job in due:
        failure = batch.failures.get(job.task_uuid)
        if failure is None:
            continue
        with structlog.contextvars.bound_contextvars(job_id=job.id, task_uuid=job.task_uuid):
            if isinstance(failure, TransientProviderError):
                _retry_or_fail(context, job, failure)
            else:
                _fail(context, job, _failure_of(failure))


def _failure_of(error: ProviderError) -> Failure:
    return Failure(error.reason, error.detail, code=error.code, parameter=error.parameter)


def _pause_claims(context: WorkerContext, failures: Iterable[ProviderError]) -> None:
    """A request Runware refused for its load holds back every worker's new claims: for its
    Retry-After, or the first retry's backoff when it named none. Retries of jobs already
    claimed go on at their own pace."""
    asked = [
        failure.retry_after
        if failure.retry_after is not None
        else context.settings.retry_base_delay_s
        for failure in failures
        if isinstance(failure, TransientProviderError) and failure.slow_down
    ]
    if asked:
        context.store.pause_claims(utcnow() + timedelta(seconds=max(asked)))


def _retry_or_fail(context: WorkerContext, job: Job, exc: TransientProviderError) -> None:
    """Send the job again after a backoff, or fail it: when the retry would land past its
    deadline, or, for a transient error other than Runware's load, after
    submit_max_attempts."""
    settings = context.settings
    delay = backoff_s(
        job.attempts, settings.retry_base_delay_s, settings.retry_max_delay_s, exc.retry_after
    )
    if utcnow().timestamp() + delay >= job.deadline_at.timestamp():
        message = f"the next retry, in {delay:.1f} s, would land past the deadline: {exc.detail}"
        _fail(context, job, Failure(exc.reason, message, code=exc.code))
        return
    if not exc.slow_down and job.attempts >= settings.submit_max_attempts:
        message = f"gave up after {job.attempts} attempts: {exc.detail}"
        _fail(context, job, Failure(exc.reason, message, code=exc.code))
        return
    attempt = {
        "attempt": job.attempts,
        "reason": exc.reason,
        "code": exc.code,
        "http_status": exc.http_status,
        "message": exc.detail,
        "delay_s": round(delay, 3),
    }
    if not context.store.touch(job.id, JobState.SUBMITTING, "retry_scheduled", attempt):
        return  # canceled or finished meanwhile: nothing left to retry
    log.warning("submit.retry", **attempt)
    instrumentation.submit_retried(exc.reason)
    # the same taskUUID goes again: Runware answers conflictTaskUUID if the first try landed
    publish_submit(context, job.id, job.attempts, countdown=delay)


def publish_submit(
    context: WorkerContext, job_id: str, expected_attempts: int, countdown: float | None = None
) -> None:
    options: dict[str, Any] = {"queue": SUBMIT_QUEUE}
    if countdown:
        options["countdown"] = countdown
    context.app.send_task(SUBMIT_TASK, args=(job_id, expected_attempts), **options)


def _fail(context: WorkerContext, job: Job, failure: Failure) -> None:
    if context.store.fail(job.id, failure):
        _log_failed(job.id, failure)


def _log_failed(job_id: str, failure: Failure) -> None:
    log.warning(
        "job.failed",
        job_id=job_id,
        status="failed",
        reason=failure.reason,
        code=failure.code,
        message=failure.message,
        parameter=failure.parameter,
    )
