"""Retention: images kept longer than their tenant's retention (the farm's, or the tenant's
own) are deleted from the directory or S3 store, a bounded batch per pass, and their jobs
say so per image; younger ones, and a tenant's kept for ever, stay."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from farmdomain.jobs import Job
from farmdomain.settings import Settings
from farmdomain.values import IncomingResult
from farmdomain.views import JobView
from imagestore import ResultsStore
from jobstore.copies import Kept, ResultCopies
from jobstore.migrations import upgrade
from jobstore.retention import Retention
from jobstore.store import JobStore
from tests.s3server import moto_s3
from worker.retention import expire_results

__all__ = ["moto_s3"]  # the fixture, for this module's tests

STORED_AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DATA = b"\x89PNG\r\n\x1a\n" + b"kept bytes"
DEFAULT_DAYS = 30


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    found = Settings(data_dir=tmp_path, webhook_secret="retention-secret")
    upgrade(found.resolved_database_url())
    return found


def _kept(store: JobStore, results: ResultsStore, tenant: str) -> tuple[Job, str]:
    """A job of `tenant` with one image kept in `results` at STORED_AT; the image's key."""
    job, _ = store.create_job({"positivePrompt": "a dune"}, tenant=tenant, deadline_s=600)
    image_uuid = str(uuid.uuid4())
    store.record_result(
        IncomingResult(job.task_uuid, image_uuid, "https://im.example/x.jpg", None, 1, None, None),
        "webhook",
    )
    key = f"images/{job.id}/{image_uuid}.jpg"
    digest = hashlib.sha256(DATA).hexdigest()
    assert results.put(key, DATA, "image/jpeg", digest)
    copies = ResultCopies(store.engine, clock=lambda: STORED_AT)
    [order] = copies.orders([(job.task_uuid, image_uuid)])
    assert copies.stored(order, Kept(key, digest, len(DATA), "image/jpeg"))
    return job, key


def _expire(store: JobStore, results: ResultsStore, days_later: float, limit: int = 200) -> int:
    now = STORED_AT + timedelta(days=days_later)
    return expire_results(store.engine, results, DEFAULT_DAYS, now, limit)


def test_images_past_their_tenants_retention_are_deleted_and_their_jobs_say_so(
    store: JobStore, results_store: ResultsStore
) -> None:
    retention = Retention(store.engine)
    retention.set_days("brief", 1)
    retention.set_days("archive", 0)
    brief, brief_key = _kept(store, results_store, "brief")
    usual, usual_key = _kept(store, results_store, "usual")
    archive, archive_key = _kept(store, results_store, "archive")

    assert _expire(store, results_store, days_later=0.5) == 0
    assert _expire(store, results_store, days_later=2) == 1
    assert results_store.head(brief_key) is None
    assert results_store.head(usual_key) is not None
    [image] = JobView.from_job(
        store.get(brief.id), lambda key: results_store.url(key, 60)
    ).model_dump(mode="json")["images"]
    assert (image["deleted"], image["stored"], image["url"]) == (True, False, None)
    assert image["deletedAt"] == (STORED_AT + timedelta(days=2)).isoformat().replace("+00:00", "Z")
    assert image["sha256"] == hashlib.sha256(DATA).hexdigest()  # what it was, for the record

    # the farm's retention for the others; the tenant kept for ever keeps its image
    assert _expire(store, results_store, days_later=DEFAULT_DAYS + 1) == 1
    assert results_store.head(usual_key) is None
    assert store.get(usual.id).images[0].deleted_at is not None
    assert results_store.get(archive_key) == DATA
    assert store.get(archive.id).images[0].deleted_at is None
    # deleted once: a later pass finds nothing more
    assert _expire(store, results_store, days_later=365) == 0


def test_a_backlog_of_expired_images_is_deleted_a_bounded_batch_per_pass(
    store: JobStore, results_store: ResultsStore
) -> None:
    keys = [_kept(store, results_store, "usual")[1] for _ in range(5)]

    passes = [_expire(store, results_store, DEFAULT_DAYS + 1, limit=2) for _ in range(4)]

    assert passes == [2, 2, 1, 0]
    assert all(results_store.head(key) is None for key in keys)


def test_a_tenants_own_retention_replaces_the_previous_one(store: JobStore) -> None:
    retention = Retention(store.engine)
    assert retention.days_of("acme", DEFAULT_DAYS) == DEFAULT_DAYS
    retention.set_days("acme", 7)
    retention.set_days("acme", 3)
    assert retention.days_of("acme", DEFAULT_DAYS) == 3
    assert retention.own_days() == {"acme": 3}
