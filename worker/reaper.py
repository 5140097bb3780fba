"""The reaper (run by beat): nothing waits forever. Safe when several run at once, because
every action it takes ends in a compare-and-set on the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from farmdomain.errors import ProviderError, WebhookRejected
from farmdomain.jobs import FailureReason, Job, JobState
from farmdomain.values import Failure, utcnow
from jobstore.bodies import record
from jobstore.copies import keys_to_copy
from runware_edge.bodies import parse_body
from worker.context import WorkerContext
from worker.copying import publish_copies
from worker.tasks import publish_submit

if TYPE_CHECKING:
    from worker.app import FarmTask

log = structlog.get_logger(__name__)


@dataclass
class ReapReport:
    """What one pass did, by action."""

    republished: list[str] = field(default_factory=list)
    resubmitted: list[str] = field(default_factory=list)
    polled: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    # results sent to be copied again: recorded, not yet kept, not given up on
    recopied: int = 0


def reap(task: FarmTask) -> None:
    report = reap_once(task.context, utcnow())
    log.info(
        "reaper.pass",
        republished=len(report.republished),
        resubmitted=len(report.resubmitted),
        polled=len(report.polled),
        timed_out=len(report.timed_out),
        recopied=report.recopied,
    )


def reap_once(context: WorkerContext, now: datetime) -> ReapReport:
    store, settings = context.store, context.settings
    report = ReapReport()
    for job in store.overdue_jobs(now):
        if job.state is JobState.SUBMITTED:
            _poll(context, job)
        failure = Failure(FailureReason.TIMEOUT, "deadline passed before every result arrived")
        if store.fail(job.id, failure):
            report.timed_out.append(job.id)

    def older(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    for job in store.stale_jobs(JobState.QUEUED, older(settings.queued_republish_after_s)):
        # the message may be lost; a duplicate is harmless since only one claim can win
        if store.touch(job.id, JobState.QUEUED, "republished", {}):
            publish_submit(context, job.id, 0)
            report.republished.append(job.id)
    for job in store.stale_jobs(JobState.SUBMITTING, older(settings.submitting_stale_after_s)):
        # the outcome of the last POST is unknown: resubmit with the same taskUUID
        if store.touch(job.id, JobState.SUBMITTING, "resubmitted", {"attempt": job.attempts}):
            publish_submit(context, job.id, job.attempts)
            report.resubmitted.append(job.id)
    for job in store.stale_jobs(JobState.SUBMITTED, older(settings.submitted_poll_after_s)):
        if store.touch(job.id, JobState.SUBMITTED, "polled", {}):
            _poll(context, job)
            report.polled.append(job.id)
    # a copy whose message was lost, or whose worker died mid-copy
    behind = context.copier.copies.not_stored(older(settings.copy_redrive_after_s))
    publish_copies(context.app, behind)
    report.recopied = len(behind)
    return report


def _poll(context: WorkerContext, job: Job) -> None:
    """Reconcile a submitted job with getResponse, recording what it finds like a webhook."""
    with structlog.contextvars.bound_contextvars(job_id=job.id, task_uuid=job.task_uuid):
        try:
            exchange = context.runware.get_response(job.task_uuid)
            parsed = parse_body({"data": exchange.data, "errors": exchange.errors})
        except (ProviderError, WebhookRejected) as exc:
            log.warning("reaper.poll_failed", error=str(exc))
            return
        lost = [e for e in parsed.errors if e.reason == FailureReason.NOT_FOUND]
        if lost:
            context.store.fail(job.id, Failure(FailureReason.LOST, lost[0].message, lost[0].code))
            return
        recorded = record(context.store, parsed, "poll")
        publish_copies(context.app, keys_to_copy([parsed], [recorded]))
        outcomes = [str(o) for o in recorded.outcomes]
        log.info("reaper.polled", results=len(parsed.results), outcomes=outcomes)
