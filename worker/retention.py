"""Retention, run by the reaper: images kept longer than their tenant's retention are
deleted from the results store, a bounded batch per pass, and marked deleted on their
result, which the job's view then shows.

The bytes go first and the mark after: a pass that dies between the two leaves an image
still listed as kept that the next pass deletes again (deleting a missing key is a no-op)
and marks.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy import Engine

from farmdomain.errors import ResultsStoreUnavailable
from imagestore import ResultsStore
from jobstore.copies import ResultKey
from jobstore.retention import Retention

log = structlog.get_logger(__name__)

# the most images one pass deletes: a backlog (a retention just shortened) drains over
# several passes instead of holding the reaper's lease for one long one
EXPIRE_BATCH = 200


def expire_results(
    engine: Engine,
    results: ResultsStore,
    default_days: int,
    now: datetime,
    limit: int = EXPIRE_BATCH,
) -> int:
    """Delete up to `limit` images of the store on `engine` past their tenant's retention
    (`default_days` unless the tenant has its own) from `results`; how many were marked
    deleted."""
    retention = Retention(engine, clock=lambda: now)
    expired = retention.expired(default_days, now, limit)
    gone: list[ResultKey] = []
    for image in expired:
        try:
            results.delete(image.key)
        except ResultsStoreUnavailable as exc:
            # the next pass finds it again
            log.warning("image.delete_failed", key=image.key, reason=exc.reason)
            continue
        gone.append((image.task_uuid, image.image_uuid))
    marked = retention.mark_deleted(gone)
    if expired:
        log.info("images.expired", found=len(expired), deleted=marked)
    return marked
