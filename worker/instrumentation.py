"""Where metrics and canonical log lines are recorded: the store observer and the boundaries.

Business logic calls none of this except through one-line hooks at the edges (the
Runware client, the webhook receiver, the retry decision); every job transition
reaches `MetricsObserver` from whichever process committed it.
"""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal

import structlog
from prometheus_client import start_http_server

from core import metrics
from core.jobs import Job, JobState
from core.records import ResultOutcome, StoreObserver, Transition
from core.request_schema import MODEL_ID
from core.store import JobStore

log = structlog.get_logger("fluxfarm.jobs")

_COUNTED = (ResultOutcome.ACCEPTED, ResultOutcome.LATE)


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
        if outcome not in _COUNTED:
            return
        self.m.results_recorded.labels(source).inc()
        if cost_usd:
            self.m.spend.labels(MODEL_ID).inc(float(cost_usd))


def instrument(store: JobStore) -> JobStore:
    """Register the metrics observer on a store, once."""
    if not any(isinstance(o, MetricsObserver) for o in store.observers):
        store.observers.append(MetricsObserver())
    return store


def provider_request(inference: bool, status: str, started: float) -> None:
    """One POST to Runware answered with `status` (an HTTP code, `timeout` or `error`);
    `inference` if it submitted generations."""
    metrics.metrics().provider_requests.labels(status).inc()
    if inference:
        elapsed = time.perf_counter() - started
        metrics.metrics().provider_submit.labels(MODEL_ID).observe(elapsed)


def submit_retried(reason: str) -> None:
    metrics.metrics().submit_retries.labels(reason).inc()


def webhook_handled(outcomes: list[str], started: float) -> None:
    """One webhook delivery: an outcome per item it carried, or its rejection."""
    m = metrics.metrics()
    for outcome in outcomes:
        m.webhooks_received.labels(outcome).inc()
    m.webhook_handling.observe(time.perf_counter() - started)


def serve_worker_metrics(port: int) -> None:
    """The worker group's /metrics on `port`, from a daemon thread of the main process."""
    registry = metrics.exposition_registry()
    server, _ = start_http_server(port, addr="0.0.0.0", registry=registry)  # noqa: S104
    log.info("metrics.serving", port=server.server_port)
