"""Metric hooks at the Runware edge: each POST's outcome and each retried submission."""

from __future__ import annotations

import time

from farmdomain import metrics
from farmdomain.request_schema import MODEL_ID


def provider_request(inference: bool, status: str, started: float) -> None:
    """One POST to Runware answered with `status` (an HTTP code, `timeout` or `error`);
    `inference` if it submitted generations."""
    metrics.metrics().provider_requests.labels(status).inc()
    if inference:
        elapsed = time.perf_counter() - started
        metrics.metrics().provider_submit.labels(MODEL_ID).observe(elapsed)


def submit_retried(reason: str) -> None:
    metrics.metrics().submit_retries.labels(reason).inc()
