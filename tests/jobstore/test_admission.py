"""The fleet-wide cap in the store, on SQLite and PostgreSQL: a first claim takes a unit of
its Runware key's capacity only while fewer than the cap are held and the key is not paused,
and every terminal transition gives it back in the same statement."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from farmdomain.jobs import IN_FLIGHT_STATES, Job, JobState
from farmdomain.settings import Settings
from farmdomain.values import Failure
from farmweb.gauges import FarmStateCollector, read_farm_state
from jobstore.capacity import Admission
from jobstore.creation import NewJob
from jobstore.engine import make_engine
from jobstore.schema import jobs
from jobstore.store import JobStore
from jobstore.waiting import waiting_jobs
from tests.jobstore.conftest import Clock, keep_images
from tests.jobstore.test_store import PARAMS, all_at_once, image, new_job

CAP = 5


@pytest.fixture
def capped(store_url: str, clock: Clock) -> Iterator[JobStore]:
    """A store whose claims count against a key of their own, capped at CAP."""
    admission = Admission(f"test-{uuid.uuid4().hex[:16]}", CAP)
    job_store = JobStore(make_engine(store_url, pool_size=20), clock=clock, admission=admission)
    yield job_store
    job_store.engine.dispose()


def backlog(store: JobStore, count: int) -> list[Job]:
    created = store.create_jobs([NewJob(PARAMS)] * count, tenant="acme", deadline_s=900.0)
    return [job for job, _ in created]


def holding(store: JobStore) -> int:
    """Jobs that hold a unit of the store's key right now: claimed and not terminal."""
    in_flight = [state.value for state in IN_FLIGHT_STATES]
    query = select(func.count()).where(
        jobs.c.capacity_key == store.admission.key_id, jobs.c.state.in_(in_flight)
    )
    with store.engine.connect() as conn:
        count: int = conn.execute(query).scalar_one()
    return count


def test_claims_beyond_the_cap_leave_the_jobs_queued_and_take_the_oldest(
    capped: JobStore, clock: Clock
) -> None:
    waiting = []
    for _ in range(CAP + 3):
        waiting += backlog(capped, 1)
        clock.advance(1)
    won = capped.claim_many([(job.id, 0) for job in reversed(waiting)])

    assert sorted(job.id for job in won) == sorted(job.id for job in waiting[:CAP])
    assert capped.capacity_held() == (CAP, CAP)
    assert {capped.get(job.id).state for job in waiting[CAP:]} == {JobState.QUEUED}
    assert capped.claim(waiting[-1].id, 0) is None
    assert capped.get(waiting[-1].id, details=True).events[-1].kind == "created"


def test_a_retry_keeps_its_unit_and_claims_even_with_the_cap_held(capped: JobStore) -> None:
    jobs_ = backlog(capped, CAP)
    assert len(capped.claim_many([(job.id, 0) for job in jobs_])) == CAP
    assert capped.claim(jobs_[0].id, 1) is not None
    assert capped.capacity_held() == (CAP, CAP)


def test_every_terminal_transition_gives_its_unit_back_once(capped: JobStore) -> None:
    succeeded, failed, canceled, timed_out, submitted = backlog(capped, CAP)
    assert len(capped.claim_many([(job.id, 0) for job in backlog(capped, 0)])) == 0
    claimed = capped.claim_many([(j.id, 0) for j in (succeeded, failed, canceled, timed_out)])
    assert len(claimed) == 4
    assert capped.claim(submitted.id, 0) is not None
    assert capped.mark_submitted_many([succeeded.id, submitted.id], {"attempt": 1})
    assert capped.capacity_held() == (5, CAP)

    capped.record_result(image(succeeded), "webhook")
    # Runware is done with the job once its last result is in: the unit comes back then,
    # while the image is copied, and not again when the copy completes the job
    assert capped.get(succeeded.id).state is JobState.SUBMITTED
    assert capped.capacity_held() == (4, CAP)
    keep_images(capped, succeeded.id)
    assert capped.get(succeeded.id).state is JobState.SUCCEEDED
    assert capped.capacity_held() == (4, CAP)
    assert capped.fail(failed.id, Failure("provider", "boom"))
    assert capped.capacity_held() == (3, CAP)
    assert capped.cancel(canceled.id).state is JobState.CANCELED
    assert capped.capacity_held() == (2, CAP)
    # the reaper's timeout is a failure with its own reason
    assert capped.fail(timed_out.id, Failure("timeout", "deadline passed"))
    assert capped.capacity_held() == (1, CAP)
    # a terminal job gives nothing back again: late results, second failures, cancels
    capped.record_result(image(succeeded), "webhook")
    assert not capped.fail(failed.id, Failure("provider", "again"))
    capped.cancel(canceled.id)
    assert capped.capacity_held() == (1, CAP)
    assert holding(capped) == 1


def test_a_job_that_never_held_a_unit_gives_none_back(capped: JobStore) -> None:
    held = backlog(capped, CAP)
    assert len(capped.claim_many([(job.id, 0) for job in held])) == CAP
    queued = new_job(capped)
    capped.cancel(queued.id)
    assert capped.fail(new_job(capped).id, Failure("timeout", "deadline passed"))
    assert capped.capacity_held() == (CAP, CAP)


def test_concurrent_claims_take_exactly_the_cap(capped: JobStore) -> None:
    waiting = backlog(capped, 80)
    # eight claimers, each racing for every job in batches of its own
    won = all_at_once(
        8, lambda i: capped.claim_many([(job.id, 0) for job in waiting[i * 3 :] + waiting])
    )
    assert sum(len(batch) for batch in won) == CAP
    assert len({job.id for batch in won for job in batch}) == CAP
    assert capped.capacity_held() == (CAP, CAP)
    assert holding(capped) == CAP


def test_claims_racing_releases_never_hold_more_than_the_cap(capped: JobStore) -> None:
    waiting = backlog(capped, 200)
    seen: list[int] = []

    def work(i: int) -> int:
        finished, mine = 0, []
        for start in range(i, len(waiting), 3):
            batch = waiting[start : start + 4]
            mine += capped.claim_many([(job.id, 0) for job in batch])
            # what every process holds, read while this one holds some
            seen.append(holding(capped))
            # each keeps what it won for a while: releases race the others' claims
            if len(mine) > 1:
                capped.fail(mine.pop(0).id, Failure("provider", "boom"))
                finished += 1
        for job in mine:
            capped.fail(job.id, Failure("provider", "boom"))
        return finished + len(mine)

    finished = all_at_once(6, work)
    assert 0 < max(seen) <= CAP
    assert sum(finished) == len(waiting) - capped.count_by_state().get("queued", 0)
    assert capped.capacity_held() == (0, CAP)
    assert holding(capped) == 0


def test_an_uncapped_store_still_counts_what_it_holds(store_url: str, clock: Clock) -> None:
    admission = Admission(f"test-{uuid.uuid4().hex[:16]}", 0)
    uncapped = JobStore(make_engine(store_url), clock=clock, admission=admission)
    try:
        waiting = backlog(uncapped, 30)
        assert len(uncapped.claim_many([(job.id, 0) for job in waiting])) == 30
        assert uncapped.capacity_held() == (30, 0)
        uncapped.fail(waiting[0].id, Failure("provider", "boom"))
        assert uncapped.capacity_held() == (29, 0)
    finally:
        uncapped.engine.dispose()


def test_the_farm_state_gauges_show_what_each_key_holds_and_its_cap(capped: JobStore) -> None:
    waiting = backlog(capped, 3)
    capped.claim_many([(job.id, 0) for job in waiting])
    state = read_farm_state(capped.engine, dict)
    assert state.capacity[capped.admission.key_id] == (3, CAP)
    collector = FarmStateCollector(Settings(), lambda: state)
    shown = {
        (sample.name, sample.labels.get("key")): sample.value
        for family in collector.collect()
        for sample in family.samples
        if sample.name.startswith("fluxfarm_runware_in_flight")
    }
    key = capped.admission.key_id[:8]
    assert shown[("fluxfarm_runware_in_flight", key)] == 3
    assert shown[("fluxfarm_runware_in_flight_cap", key)] == CAP


def test_the_pause_gauge_shows_the_seconds_left_of_a_keys_pause(capped: JobStore) -> None:
    key = capped.admission.key_id
    [job] = backlog(capped, 1)
    capped.claim_many([(job.id, 0)])  # a first claim makes the key's row
    assert read_farm_state(capped.engine, dict).paused_s.get(key, 0.0) == 0.0
    capped.pause_claims(datetime.now(UTC) + timedelta(seconds=120))

    state = read_farm_state(capped.engine, dict)
    shown = {
        sample.labels["key"]: sample.value
        for family in FarmStateCollector(Settings(), lambda: state).collect()
        for sample in family.samples
        if sample.name == "fluxfarm_runware_paused_seconds"
    }

    assert 100 < shown[key[:8]] <= 120


def test_a_pause_leaves_first_claims_queued_until_it_ends_and_retries_go_on(
    capped: JobStore, clock: Clock
) -> None:
    retried, *waiting = backlog(capped, 4)
    assert capped.claim(retried.id, 0) is not None
    capped.pause_claims(clock.now + timedelta(seconds=10))

    assert capped.claim_many([(job.id, 0) for job in waiting]) == []
    assert {capped.get(job.id).state for job in waiting} == {JobState.QUEUED}
    found = waiting_jobs(capped.engine, 10, clock.now)
    assert sorted(j.job_id for j in found) == sorted(j.id for j in waiting)
    # a job already claimed holds its unit: its retry is not held back
    assert capped.claim(retried.id, 1) is not None
    assert capped.capacity_held() == (1, CAP)

    clock.advance(9.9)
    assert capped.claim(waiting[0].id, 0) is None  # the pause lasts until its end
    clock.advance(0.1)
    # the jobs the pause left waiting are the dispatcher's to admit, within the limit the
    # refusal halved: messages claim nothing while they wait
    assert capped.claim_many([(job.id, 0) for job in waiting]) == []
    assert capped.key_state().limit == CAP // 2
    assert len(capped.claim_many([(job.id, 0) for job in waiting], admitted=True)) == 1
    assert capped.capacity_held() == (2, CAP)


def test_a_pause_only_grows_and_holds_back_an_uncapped_store_too(
    store_url: str, clock: Clock
) -> None:
    admission = Admission(f"test-{uuid.uuid4().hex[:16]}", 0)
    uncapped = JobStore(make_engine(store_url), clock=clock, admission=admission)
    try:
        first, *waiting = backlog(uncapped, 3)
        assert uncapped.claims_paused_until() is None
        assert uncapped.claim(first.id, 0) is not None
        until = clock.now + timedelta(seconds=30)
        uncapped.pause_claims(until)
        uncapped.pause_claims(clock.now + timedelta(seconds=5))
        assert uncapped.claims_paused_until() == until
        clock.advance(20)
        assert uncapped.claim_many([(job.id, 0) for job in waiting]) == []
        clock.advance(11)
        assert len(uncapped.claim_many([(job.id, 0) for job in waiting])) == 2
        assert uncapped.claims_paused_until() == until
    finally:
        uncapped.engine.dispose()


def test_the_pause_is_the_keys_own(capped: JobStore, store_url: str, clock: Clock) -> None:
    other = JobStore(
        make_engine(store_url), clock=clock, admission=Admission(f"test-{uuid.uuid4().hex}", CAP)
    )
    try:
        mine, theirs = backlog(capped, 1)[0], backlog(other, 1)[0]
        capped.claim(backlog(capped, 1)[0].id, 0)
        other.claim(backlog(other, 1)[0].id, 0)
        capped.pause_claims(clock.now + timedelta(seconds=10))
        assert capped.claim(mine.id, 0) is None
        assert other.claim(theirs.id, 0) is not None
        assert other.claims_paused_until() is None
    finally:
        other.engine.dispose()


def test_waiting_jobs_created_before_a_time_leave_out_the_later_ones(
    capped: JobStore, clock: Clock
) -> None:
    early = backlog(capped, 2)
    cut = clock.advance(1)
    backlog(capped, 2)
    found = waiting_jobs(capped.engine, 10, clock.now, created_before=cut)
    assert sorted(job.job_id for job in found) == sorted(job.id for job in early)


def test_while_jobs_wait_messages_claim_nothing_and_the_dispatcher_admits(
    capped: JobStore, clock: Clock
) -> None:
    first = []
    for _ in range(CAP + 2):
        first += backlog(capped, 1)
        clock.advance(1)
    assert len(capped.claim_many([(job.id, 0) for job in first])) == CAP
    capped.fail(first[0].id, Failure("provider", "done"))
    clock.advance(1)
    late = backlog(capped, 1)[0]

    # a unit is free, but two jobs wait: the message of a job that came later takes nothing
    assert capped.claim(late.id, 0) is None
    won = capped.claim_many([(job.id, 0) for job in first[CAP:]], admitted=True)
    assert [job.id for job in won] == [first[CAP].id]
    capped.end_backlog()
    assert capped.claim(late.id, 0) is None  # still two waiting

    for job in first[1:3]:
        capped.fail(job.id, Failure("provider", "done"))
    assert len(capped.claim_many([(first[-1].id, 0), (late.id, 0)], admitted=True)) == 2
    capped.end_backlog()
    capped.fail(late.id, Failure("provider", "done"))
    # none waits: a message claims its own job at once again
    assert capped.claim(backlog(capped, 1)[0].id, 0) is not None


def test_a_pause_halves_the_limit_once_and_admissions_climb_it_back(
    capped: JobStore, clock: Clock
) -> None:
    assert capped.key_state().limit == 0  # no claim yet: the row does not exist
    capped.pause_claims(clock.now + timedelta(seconds=1))
    capped.pause_claims(clock.now + timedelta(seconds=2))
    assert capped.key_state().limit == CAP // 2
    clock.advance(3)
    capped.pause_claims(clock.now + timedelta(seconds=1))
    assert capped.key_state().limit == 1
    clock.advance(2)

    jobs_in_line = backlog(capped, CAP)
    admitted = 0
    for job in jobs_in_line:
        if capped.claim_many([(job.id, 0)], admitted=True):
            admitted += 1
            capped.fail(job.id, Failure("provider", "done"))
    # one more unit per limit's worth of admissions, never above the cap
    assert admitted == CAP
    assert 2 < capped.key_state().limit <= CAP


def test_waiting_jobs_come_in_line_by_priority_with_age_counted(
    capped: JobStore, clock: Clock
) -> None:
    aging_s = capped.admission.aging_s
    old = capped.create_jobs([NewJob(PARAMS)], tenant="acme", deadline_s=900.0)[0][0]
    clock.advance(aging_s * 2 - 1)
    urgent, later = (
        job
        for job, _ in capped.create_jobs(
            [NewJob(PARAMS, priority=2), NewJob(PARAMS, priority=1)],
            tenant="acme",
            deadline_s=900.0,
        )
    )
    assert capped.get(urgent.id).priority == 2

    found = waiting_jobs(capped.engine, 2, clock.now)
    # priority 2 created less than two steps after priority 0 goes first; priority 1 created
    # more than one step after it does not
    assert [job.job_id for job in found] == [urgent.id, old.id]
    # of more claims than units, the first in line win
    for job in capped.claim_many([(j.id, 0) for j in [old, *backlog(capped, CAP)]]):
        capped.fail(job.id, Failure("provider", "done"))
    won = capped.claim_many([(j.id, 0) for j in (later, old, urgent)], admitted=True)
    assert [job.id for job in won][:1] == [urgent.id]
