"""The submit task: claim a job, POST it to Runware with a webhookURL, record `submitted`."""

from __future__ import annotations

import os
import random
import signal
import time
from decimal import Decimal
from typing import Any

import structlog

from core.broker import SUBMIT_QUEUE, SUBMIT_TASK
from core.errors import PermanentProviderError, TransientProviderError
from core.jobs import FailureReason, Job, JobState
from core.records import Failure, utcnow
from worker import instrumentation
from worker.app import app
from worker.context import ProcessContext, process_context
from worker.results import parse_body, record
from worker.runware import inference_task
from worker.tokens import webhook_url

log = structlog.get_logger(__name__)


def backoff_s(attempt: int, base_s: float, cap_s: float, retry_after: float | None) -> float:
    """Full-jitter exponential backoff, never shorter than the server's Retry-After."""
    # the exponent is bounded: past the cap it changes nothing, and 2**1024 overflows a float
    ceiling = min(cap_s, base_s * 2 ** min(max(0, attempt - 1), 64))
    return max(retry_after or 0.0, random.uniform(0, ceiling))


@app.task(name=SUBMIT_TASK, ignore_result=True)
def submit(job_id: str, expected_attempts: int = 0) -> None:
    """Submit one job; a message whose attempt already ran claims nothing and returns."""
    context = process_context()
    with structlog.contextvars.bound_contextvars(job_id=job_id):
        job = context.store.claim(job_id, expected_attempts)
        if job is None:
            log.info("submit.skipped", expected_attempts=expected_attempts)
            return
        with structlog.contextvars.bound_contextvars(task_uuid=job.task_uuid):
            _submit_claimed(context, job)


def _submit_claimed(context: ProcessContext, job: Job) -> None:
    settings = context.settings
    if utcnow() >= job.deadline_at:
        _fail(context, job, Failure(FailureReason.TIMEOUT, "deadline passed before submission"))
        return
    # only a first attempt is held to the budget: a retry resends a task Runware may
    # already have accepted, at no further cost
    if settings.enforce_daily_budget and job.attempts == 1 and _over_budget(context):
        message = f"the daily budget of ${settings.spend_daily_budget_usd:g} would be passed"
        _fail(context, job, Failure(FailureReason.QUOTA, message, code="dailyBudgetExceeded"))
        return
    url = webhook_url(settings.public_base_url, job.task_uuid, context.webhook_secrets[0])
    crash_point(context, "after_claim")
    started = time.perf_counter()
    try:
        acknowledged = context.runware.submit(inference_task(job.task_uuid, job.request, url))
    except TransientProviderError as exc:
        _retry_or_fail(context, job, exc)
        return
    except PermanentProviderError as exc:
        failure = Failure(exc.reason, exc.detail, code=exc.code, parameter=exc.parameter)
        _fail(context, job, failure)
        return
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    crash_point(context, "after_post")
    if acknowledged:
        record(context.store, parse_body({"data": acknowledged}), "ack")
    context.store.mark_submitted(job.id, {"attempt": job.attempts, "duration_ms": duration_ms})
    log.info("job.submitted", status="submitted", attempt=job.attempts, duration_ms=duration_ms)


def _over_budget(context: ProcessContext) -> bool:
    """Whether today's committed spend, this claimed job's estimate included, is too much.

    Claims are committed before this check, so two jobs checked at once each see the
    other: near the cap both may fail, but the budget is never passed on estimates.
    """
    now = utcnow()
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    committed = context.store.committed_spend_since(day_start)
    return committed > Decimal(str(context.settings.spend_daily_budget_usd))


def _retry_or_fail(context: ProcessContext, job: Job, exc: TransientProviderError) -> None:
    settings = context.settings
    delay = backoff_s(
        job.attempts, settings.retry_base_delay_s, settings.retry_max_delay_s, exc.retry_after
    )
    out_of_time = utcnow().timestamp() + delay >= job.deadline_at.timestamp()
    if job.attempts >= settings.submit_max_attempts or out_of_time:
        why = "deadline" if out_of_time else f"{job.attempts} attempts"
        failure = Failure(exc.reason, f"gave up after {why}: {exc.detail}", code=exc.code)
        _fail(context, job, failure)
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
    publish_submit(job.id, job.attempts, countdown=delay)


def crash_point(context: ProcessContext, point: str) -> None:
    """Die here, as a `kill -9` would, when FLUXFARM_CRASH_POINTS asks for it.

    The windows between claim and POST and between POST and `submitted` are where a
    crash could lose or double-pay a job, so the chaos tests need to hit them on purpose.
    """
    share = context.settings.crash_points.get(point, 0.0)
    if share and random.random() < share:
        log.warning("crash_point.hit", point=point)
        os.kill(os.getpid(), signal.SIGKILL)


def publish_submit(job_id: str, expected_attempts: int, countdown: float | None = None) -> None:
    options: dict[str, Any] = {"queue": SUBMIT_QUEUE}
    if countdown:
        options["countdown"] = countdown
    submit.apply_async(args=(job_id, expected_attempts), **options)


def _fail(context: ProcessContext, job: Job, failure: Failure) -> None:
    if context.store.fail(job.id, failure):
        log.warning(
            "job.failed",
            status="failed",
            reason=failure.reason,
            code=failure.code,
            message=failure.message,
            parameter=failure.parameter,
        )
