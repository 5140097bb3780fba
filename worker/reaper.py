"""The reaper (run by beat): nothing waits forever.

One pass runs at a time fleet-wide, under the store's `reaper` lease: beat's messages
come from every beat a deployment runs, and a pass polls Runware for each overdue job, so
two at once would double that traffic. Each action still ends in a compare-and-set on the
store, so a pass that outlives its lease and meets the next one does no harm.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from farmdomain.errors import ProviderError, WebhookRejected
from farmdomain.jobs import FailureReason, Job, JobState
from farmdomain.values import Failure, utcnow
from jobstore.bodies import record
from jobstore.copies import keys_to_copy
from jobstore.leases import Leases
from jobstore.protocol import Store
from runware_edge.bodies import parse_body
from worker.context import WorkerContext
from worker.copying import publish_copies
from worker.retention import expire_results
from worker.tasks import publish_submit

if TYPE_CHECKING:
    from worker.app import FarmTask

log = structlog.get_logger(__name__)

# the most jobs of one state a pass takes (the store's own default)
STALE_BATCH = 500
REAPER_LEASE = "reaper"
# a pass killed mid-way holds the lease this many intervals at most: the next pass after
# that takes over
LEASE_INTERVALS = 2


@dataclass
class ReapReport:
    """What one pass did, by action."""

    republished: list[str] = field(default_factory=list)
    resubmitted: list[str] = field(default_factory=list)
    polled: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    # results sent to be copied again: recorded, not yet kept, not given up on
    recopied: int = 0
    # images deleted from the results store, past their tenant's retention
    expired: int = 0


def reap(task: FarmTask) -> None:
    leases = Leases(task.context.store.engine)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    ttl_s = LEASE_INTERVALS * task.context.settings.reaper_interval_s
    if not leases.take(REAPER_LEASE, holder, ttl_s):
        log.info("reaper.skipped", reason="another pass holds the reaper lease")
        return
    try:
        report = reap_once(task.context, utcnow())
    finally:
        leases.give_back(REAPER_LEASE, holder)
    log.info(
        "reaper.pass",
        republished=len(report.republished),
        resubmitted=len(report.resubmitted),
        polled=len(report.polled),
        timed_out=len(report.timed_out),
        recopied=report.recopied,
        expired=report.expired,
    )


def reap_once(context: WorkerContext, now: datetime) -> ReapReport:
    store, settings = context.store, context.settings
    report = ReapReport()
    for job in store.overdue_jobs(now):
        if job.state is JobState.SUBMITTED and not _awaiting_copies(job):
            _poll(context, job)
        if store.fail(job.id, _deadline_failure(context, job)):
            report.timed_out.append(job.id)

    def older(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    republishable = _admissible(store, now)
    stale_queued = older(settings.queued_republish_after_s)
    for job in store.stale_jobs(JobState.QUEUED, stale_queued, republishable):
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
        if _awaiting_copies(job):
            # Runware has nothing more to say; the touch keeps the job behind the others
            store.touch(job.id, JobState.SUBMITTED, "awaiting_copies", {})
        elif store.touch(job.id, JobState.SUBMITTED, "polled", {}):
            _poll(context, job)
            report.polled.append(job.id)
    # a copy whose message was lost, or whose worker died mid-copy
    behind = context.copier.copies.not_stored(older(settings.copy_redrive_after_s))
    publish_copies(context.app, behind)
    report.recopied = len(behind)
    report.expired = expire_results(
        store.engine, context.copier.results, settings.results_retention_days, now
    )
    return report


def _awaiting_copies(job: Job) -> bool:
    """Every result arrived: the job waits for its images to be stored, not for Runware."""
    return job.images_received >= job.number_results


def _deadline_failure(context: WorkerContext, job: Job) -> Failure:
    """Why a job past its deadline fails: the images not stored, once every result came
    (copies refused or still failing); else the results that never arrived."""
    if not _awaiting_copies(job):
        return Failure(FailureReason.TIMEOUT, "deadline passed before every result arrived")
    why = context.copier.copies.why_not_stored(job.id, job.number_results)
    return Failure(FailureReason.STORAGE, f"deadline passed with {why or 'its images unsettled'}")


def _admissible(store: Store, now: datetime) -> int:
    """How many queued jobs a republished message could have claimed now. Under a cap only
    the free units' worth, and none while the fleet is paused: a job waiting for admission
    is the dispatcher's, and no message goes round for it."""
    paused_until = store.claims_paused_until()
    if paused_until is not None and paused_until > now:
        return 0
    held, cap = store.capacity_held()
    return STALE_BATCH if cap == 0 else max(0, cap - held)


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
