"""Queueing validated requests: jobs committed, then their messages published, one
transaction and one message per Runware POST's worth of jobs.

A call's batch (`submit_many`) goes as it is. Single submissions that threads of one
process make at the same moment go together too, through a `Batcher`: the web process's
concurrent POST /v1/jobs, a service submitting from a thread pool. A caller still returns
only once its own job is committed and published, and hears only of its own refusal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from structlog.contextvars import bound_contextvars

from farmdomain.admission import DEFAULT_PRIORITY
from farmdomain.batching import Batcher
from farmdomain.broker import (
    SUBMIT_MANY_TASK,
    SUBMIT_QUEUE,
    SUBMIT_TASK,
    BrokerCelery,
    celery_config,
)
from farmdomain.errors import IdempotencyConflict
from farmdomain.jobs import Job
from farmdomain.request_schema import GenerationRequest
from farmdomain.settings import Settings
from farmdomain.values import request_fingerprint
from jobstore.creation import NewJob
from jobstore.protocol import Store

logger = structlog.get_logger(__name__)

# the flushers of single submissions: a second one starts only on a full batch
SUBMISSION_FLUSHERS = 2

Queued = tuple[Job, bool]


@dataclass(frozen=True)
class Submission:
    """A validated request to queue, and when its caller asked."""

    request: GenerationRequest
    idempotency_key: str | None
    deadline_s: float | None
    started: float
    callback_url: str | None = None
    priority: int = DEFAULT_PRIORITY


class JobQueue:
    """Commits a tenant's jobs and publishes their submit messages."""

    def __init__(self, settings: Settings, store: Store, tenant: str) -> None:
        self.settings = settings
        self.store = store
        self.tenant = tenant
        self._celery = BrokerCelery("fluxfarm.producers", set_as_current=False)
        self._celery.conf.update(celery_config(settings))
        self._singles: Batcher[Submission, Queued | IdempotencyConflict] = Batcher(
            self._queue_singles,
            settings.submit_batch_max,
            SUBMISSION_FLUSHERS,
            name="submissions",
        )

    def close(self) -> None:
        self._singles.close()
        self._celery.close()

    def queue_one(self, submission: Submission) -> Queued:
        """Queue one caller's request, together with what other threads queue meanwhile."""
        queued = self._singles.run(submission)
        if isinstance(queued, IdempotencyConflict):
            raise queued
        return queued

    def queue(self, submissions: Sequence[Submission]) -> list[Queued]:
        """Commit the jobs in one transaction, publish the new ones, log each job once;
        (job, created) for each, in order. All or none: IdempotencyConflict stores nothing."""
        queued = self.store.create_jobs(
            [
                NewJob(
                    s.request.runware_params(),
                    s.idempotency_key,
                    _identity(s),
                    deadline_s=s.deadline_s or self.settings.job_deadline_s,
                    callback_url=s.callback_url,
                    priority=s.priority,
                )
                for s in submissions
            ],
            tenant=self.tenant,
            deadline_s=self.settings.job_deadline_s,
        )
        # a repeated idempotency key found a job whose message was already published
        published = self.publish([job for job, created in queued if created])
        for submission, (job, created) in zip(submissions, queued, strict=True):
            with bound_contextvars(job_id=job.id, task_uuid=job.task_uuid):
                logger.info(
                    "job.queued",
                    tenant=self.tenant,
                    status=job.state.value,
                    created=created,
                    published=job.id in published,
                    duration_ms=round((time.perf_counter() - submission.started) * 1000, 1),
                )
        return queued

    def _queue_singles(self, submissions: list[Submission]) -> list[Queued | IdempotencyConflict]:
        """Independent callers' submissions together; if a key conflict refuses the batch,
        each goes alone, so only the caller whose key it is hears of it."""
        try:
            return list(self.queue(submissions))
        except IdempotencyConflict as conflict:
            if len(submissions) == 1:
                return [conflict]
        alone: list[Queued | IdempotencyConflict] = []
        for submission in submissions:
            try:
                alone += self.queue([submission])
            except IdempotencyConflict as conflict:
                alone.append(conflict)
        return alone

    def publish(self, jobs: Sequence[Job]) -> set[str]:
        """Send the jobs their submit messages, all over one broker connection; the ids sent.

        Jobs go in messages of up to `submit_batch_max`, what one POST to Runware carries,
        so a batch costs the broker and the workers one message per POST, not per job; a
        lone job goes as the one-job task. A job whose message fails is logged and stays
        queued. After a failure the rest are not tried: kombu has already retried that
        message, so the broker is away, and each further message would wait out retries of
        its own.
        """
        sent: set[str] = set()
        if not jobs:
            return sent
        error = ""
        try:
            with self._celery.producer_or_acquire() as producer:
                size = self.settings.submit_batch_max
                for group in (jobs[i : i + size] for i in range(0, len(jobs), size)):
                    # attempt 0: the claim only succeeds on a job no worker has taken yet
                    name, args = (
                        (SUBMIT_TASK, [group[0].id, 0])
                        if len(group) == 1
                        else (SUBMIT_MANY_TASK, [[[job.id, 0] for job in group]])
                    )
                    self._celery.send_task(name, args=args, queue=SUBMIT_QUEUE, producer=producer)
                    sent.update(job.id for job in group)
        # whatever the transport raises, the rows are committed and the reaper republishes
        # queued jobs whose message never arrived, so the caller still gets its job ids
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        for job in jobs:
            if job.id not in sent:
                with bound_contextvars(job_id=job.id, task_uuid=job.task_uuid):
                    logger.warning("job.publish_failed", error=error)
        return sent


def _identity(submission: Submission) -> str:
    """What an idempotency key stands for: the request, where its outcome is posted and
    its priority; the same key with another callbackUrl or priority is a conflict, not the
    first job again."""
    fingerprint = submission.request.fingerprint()
    # each part joins only when set, so a key's identity stays what it was before it had one
    parts: dict[str, object] = {"callbackUrl": submission.callback_url}
    if submission.priority:
        parts["priority"] = submission.priority
    if submission.callback_url is None and len(parts) == 1:
        return fingerprint
    return request_fingerprint({"request": fingerprint, **parts})
