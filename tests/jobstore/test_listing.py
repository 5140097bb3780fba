"""Listing a tenant's jobs on SQLite and PostgreSQL: newest first, a page after a position,
filters, and never another tenant's job."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from farmdomain.jobs import JobState
from farmdomain.listing import JobQuery, Position, cursor_of, position_of
from farmdomain.values import Failure
from jobstore.creation import NewJob
from jobstore.listing import list_jobs
from jobstore.store import JobStore
from tests.jobstore.conftest import Clock

PARAMS = {"positivePrompt": "a fox", "width": 1024, "height": 1024}


def _every_page(store: JobStore, tenant: str, query: JobQuery) -> list[list[str]]:
    pages = []
    while True:
        page = list_jobs(store.engine, tenant, query)
        pages.append([job.id for job in page.jobs])
        if page.next is None:
            return pages
        # through the cursor's text, as a caller hands it back
        query = JobQuery(limit=query.limit, after=position_of(cursor_of(page.next)))


def test_pages_run_newest_first_through_jobs_that_share_a_time(
    store: JobStore, clock: Clock
) -> None:
    made: list[tuple[datetime, str]] = []
    for round_ in range(3):
        # a batch's jobs share one created_at: the id breaks the tie
        batch = store.create_jobs([NewJob(PARAMS)] * 3, tenant="acme", deadline_s=60)
        made += [(job.created_at, job.id) for job, _ in batch]
        store.create_job(PARAMS, tenant="globex", deadline_s=60)
        clock.advance(1 + round_)

    pages = _every_page(store, "acme", JobQuery(limit=4))

    assert [len(page) for page in pages] == [4, 4, 1]
    newest_first = [job_id for _, job_id in sorted(made, reverse=True)]
    assert [job_id for page in pages for job_id in page] == newest_first
    assert _every_page(store, "acme", JobQuery(limit=9)) == [newest_first]
    assert _every_page(store, "initech", JobQuery()) == [[]]


def test_filters_by_states_times_in_any_offset_and_key(store: JobStore, clock: Clock) -> None:
    old, _ = store.create_job(PARAMS, tenant="acme", deadline_s=60, idempotency_key="k-1")
    clock.advance(60)
    middle, _ = store.create_job(PARAMS, tenant="acme", deadline_s=60)
    assert store.fail(middle.id, Failure("provider", "no"))
    clock.advance(60)
    new, _ = store.create_job(PARAMS, tenant="acme", deadline_s=60)
    store.create_job(PARAMS, tenant="globex", deadline_s=60, idempotency_key="k-1")

    def ids(query: JobQuery) -> list[str]:
        return [job.id for job in list_jobs(store.engine, "acme", query).jobs]

    # the same instant two hours east of UTC: compared as UTC on both backends
    east = timezone(timedelta(hours=2))
    assert ids(JobQuery(created_after=middle.created_at.astimezone(east))) == [new.id]
    assert ids(JobQuery(created_before=middle.created_at.astimezone(east))) == [old.id]
    assert ids(JobQuery(created_after=old.created_at, created_before=new.created_at)) == [middle.id]
    assert ids(JobQuery(states=(JobState.FAILED,))) == [middle.id]
    assert ids(JobQuery(states=(JobState.QUEUED, JobState.SUCCEEDED))) == [new.id, old.id]
    assert ids(JobQuery(idempotency_key="k-1")) == [old.id]
    assert ids(JobQuery(after=Position(new.created_at, new.id), limit=1)) == [middle.id]
