"""The store observer: every committed transition's metrics and canonical log line.

Business logic calls none of this: every job transition reaches `MetricsObserver` from
whichever process committed it; the other hooks sit at the edges (the Runware client,
the webhook receiver, the retry decision).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import structlog

from farmdomain import metrics
from farmdomain.jobs import Job, JobState
from farmdomain.request_schema import MODEL_ID
from farmdomain.values import STORED_OUTCOMES, ResultOutcome, StoreObserver, Transition
from jobstore.protocol import Store

log = structlog.get_logger("fluxfarm.jobs")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _stage_start(job: Job, from_state: JobState | None) -> datetime | None:
    """When the job entered `from_state`: the start of the stage this transition ends."""
    return {
        None: job.created_at,
        JobState.QUEUED: job.created_at,
        JobState.SUBMITTING: job.claimed_at,
        JobState.SUBMITTED: job.submitted_at or job.claimed_at,
    }.get(from_state)


class MetricsObserver(StoreObserver):
    """Turns committed transitions and results into metrics and one log line each."""

    def __init__(self, farm_metrics: metrics.FarmMetrics | None = None) -> None:
        self._metrics = farm_metrics

    @property
    def m(self) -> metrics.FarmMetrics:
        return self._metrics or metrics.metrics()

    def transitioned(self, transition: Transition) -> None:
        job, source, target = transition.job, transition.from_state, transition.to_state
        stage_s = _seconds(_stage_start(job, source), job.updated_at)
        total_s = _seconds(job.created_at, job.updated_at)
        if source is JobState.QUEUED and target is JobState.SUBMITTING:
            self.m.jobs_submitted.labels(MODEL_ID).inc()
            self.m.queue_wait.labels(MODEL_ID).observe(stage_s or 0.0)
            self.m.tenant_admissions.labels(self.m.tenant_label(job.tenant)).inc()
        if target.terminal:
            self._finished(job, target, total_s or 0.0)
        log.info(
            "job.transition",
            job_id=job.id,
            task_uuid=job.task_uuid,
            from_state=source.value if source else None,
            status=target.value,
            attempt=job.attempts,
            duration_ms=round((stage_s or 0.0) * 1000, 1),
            total_ms=round((total_s or 0.0) * 1000, 1),
            reason=job.failure_reason,
        )

    def _finished(self, job: Job, status: JobState, total_s: float) -> None:
        self.m.jobs_finished.labels(MODEL_ID, status.value).inc()
        self.m.job_duration.labels(MODEL_ID, status.value).observe(total_s)
        self.m.job_cost.labels(MODEL_ID).observe(float(job.cost_usd))
        if status is JobState.FAILED:
            self.m.job_failures.labels(MODEL_ID, job.failure_reason or "provider").inc()
        elif status is JobState.CANCELED:
            self.m.job_failures.labels(MODEL_ID, "canceled").inc()
        elif status is JobState.SUCCEEDED and job.submitted_at is not None:
            generation_s = _seconds(job.submitted_at, job.finished_at) or 0.0
            self.m.provider_generation.labels(MODEL_ID).observe(generation_s)

    def result_recorded(
        self, outcome: ResultOutcome, cost_usd: Decimal | None, source: str
    ) -> None:
        # the store reports a duplicate as such, so each distinct result is counted once
        if outcome not in STORED_OUTCOMES:
            return
        self.m.results_recorded.labels(source).inc()
        if cost_usd:
            self.m.spend.labels(MODEL_ID).inc(float(cost_usd))


def instrument(store: Store) -> Store:
    """Register the metrics observer on a store, once."""
    if not any(isinstance(o, MetricsObserver) for o in store.observers):
        store.observers.append(MetricsObserver())
    return store
