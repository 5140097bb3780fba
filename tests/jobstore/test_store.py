"""The job store on SQLite and PostgreSQL: one code path, every transition a compare-and-set."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from sqlalchemy import event, func, inspect, select

from farmdomain.errors import IdempotencyConflict, JobNotFound, StoreUnavailable
from farmdomain.jobs import Job, JobState
from farmdomain.values import Failure, IncomingResult, ResultOutcome, Transition
from jobstore.creation import NewJob
from jobstore.engine import make_engine
from jobstore.migrations import upgrade
from jobstore.schema import events, jobs, results
from jobstore.store import JobStore
from tests.jobstore.conftest import Clock, copies_of, keep_images, kept_image

PARAMS: dict[str, Any] = {"positivePrompt": "a lighthouse in fog", "width": 256, "height": 256}
T = TypeVar("T")


def new_job(store: JobStore, number_results: int = 1, **kwargs: Any) -> Job:
    params = {**PARAMS, "numberResults": number_results} if number_results != 1 else PARAMS
    kwargs.setdefault("tenant", "acme")
    kwargs.setdefault("deadline_s", 900.0)
    job, created = store.create_job(params, **kwargs)
    assert created
    return job


def submitted_job(store: JobStore, number_results: int = 1) -> Job:
    job = new_job(store, number_results)
    assert store.claim(job.id, 0) is not None
    assert store.mark_submitted(job.id, {"attempt": 1})
    return store.get(job.id)


def image(job: Job, image_uuid: str | None = None, cost: str | None = "0.045") -> IncomingResult:
    return IncomingResult(
        task_uuid=job.task_uuid,
        image_uuid=image_uuid or str(uuid.uuid4()),
        image_url="https://im.example/x.jpg",
        image_data=None,
        seed=42,
        cost_usd=None if cost is None else Decimal(cost),
        nsfw=False,
    )


def all_at_once(count: int, action: Callable[[int], T]) -> list[T]:
    """Run `action(i)` in `count` threads released together by a barrier."""
    barrier = threading.Barrier(count)

    def run(i: int) -> T:
        barrier.wait()
        return action(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def stored_rows(store: JobStore, job: Job) -> int:
    with store.engine.connect() as conn:
        count: int = conn.execute(
            select(func.count()).select_from(results).where(results.c.job_id == job.id)
        ).scalar_one()
    return count


def event_kinds(store: JobStore, job: Job) -> list[str]:
    return [e.kind for e in store.get(job.id, details=True).events]


# -- creation ---------------------------------------------------------------------------------


def test_create_job_commits_a_queued_job_with_a_task_uuid_and_a_created_event(
    store: JobStore, store_url: str, clock: Clock
) -> None:
    job = new_job(store, number_results=3, deadline_s=600)
    assert job.state is JobState.QUEUED
    assert uuid.UUID(job.task_uuid).version == 4
    assert job.task_uuid != job.id
    assert (job.number_results, job.images_received, job.attempts) == (3, 0, 0)
    assert job.cost_usd == Decimal(0)
    assert job.request == {**PARAMS, "numberResults": 3}
    assert job.created_at == clock.now
    assert (job.deadline_at - job.created_at).total_seconds() == 600
    # committed: another engine sees the row, the event and the taskUUID mapping
    other = JobStore(make_engine(store_url))
    try:
        seen = other.get(job.id, details=True)
        assert seen.task_uuid == job.task_uuid
        assert [(e.kind, e.from_state, e.to_state) for e in seen.events] == [
            ("created", None, "queued")
        ]
        assert other.job_id_for_task(job.task_uuid) == job.id
    finally:
        other.engine.dispose()


def test_every_job_gets_its_own_task_uuid(store: JobStore) -> None:
    made = [new_job(store) for _ in range(5)]
    assert len({j.task_uuid for j in made}) == 5


def test_idempotency_key_returns_the_same_job_and_creates_nothing(store: JobStore) -> None:
    first, created = store.create_job(PARAMS, tenant="acme", deadline_s=60, idempotency_key="k1")
    again, created_again = store.create_job(
        dict(PARAMS), tenant="acme", deadline_s=60, idempotency_key="k1"
    )
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert again.task_uuid == first.task_uuid
    assert store.count_by_state() == {"queued": 1}


def test_idempotency_key_with_a_different_request_raises_conflict(store: JobStore) -> None:
    first, _ = store.create_job(PARAMS, tenant="acme", deadline_s=60, idempotency_key="k1")
    with pytest.raises(IdempotencyConflict) as caught:
        store.create_job({**PARAMS, "seed": 7}, tenant="acme", deadline_s=60, idempotency_key="k1")
    assert caught.value.job_id == first.id
    assert "k1" in str(caught.value)
    assert store.count_by_state() == {"queued": 1}


def test_idempotency_keys_are_per_tenant(store: JobStore) -> None:
    a, created_a = store.create_job(PARAMS, tenant="acme", deadline_s=60, idempotency_key="k")
    b, created_b = store.create_job(PARAMS, tenant="umbrella", deadline_s=60, idempotency_key="k")
    assert created_a
    assert created_b
    assert a.id != b.id
    assert a.task_uuid != b.task_uuid


def test_jobs_without_idempotency_key_never_collide(store: JobStore) -> None:
    new_job(store)
    new_job(store)
    assert store.count_by_state() == {"queued": 2}


def test_get_of_an_unknown_job_or_another_tenants_job_raises_not_found(store: JobStore) -> None:
    job = new_job(store)
    with pytest.raises(JobNotFound):
        store.get(str(uuid.uuid4()))
    with pytest.raises(JobNotFound):
        store.get(job.id, tenant="umbrella")
    assert store.get(job.id, tenant="acme").id == job.id
    assert store.job_id_for_task(str(uuid.uuid4())) is None


# -- claim ------------------------------------------------------------------------------------


def test_only_one_of_many_concurrent_claimers_wins(store: JobStore) -> None:
    job = new_job(store)
    won = all_at_once(8, lambda _: store.claim(job.id, 0))
    winners = [j for j in won if j is not None]
    assert len(winners) == 1
    assert winners[0].state is JobState.SUBMITTING
    assert winners[0].attempts == 1
    after = store.get(job.id)
    assert (after.state, after.attempts) == (JobState.SUBMITTING, 1)
    assert event_kinds(store, job) == ["created", "claimed"]


def test_redelivered_message_with_stale_expected_attempts_claims_nothing(store: JobStore) -> None:
    job = new_job(store)
    assert store.claim(job.id, 0) is not None
    assert store.claim(job.id, 0) is None
    retried = store.claim(job.id, 1)
    assert retried is not None
    assert store.claim(job.id, 1) is None
    after = store.get(job.id)
    assert (after.state, after.attempts) == (JobState.SUBMITTING, 2)


def test_retry_with_the_matching_attempt_count_reclaims_from_submitting(
    store: JobStore, clock: Clock
) -> None:
    job = new_job(store)
    first = store.claim(job.id, 0)
    assert first is not None
    claimed_at = first.claimed_at
    clock.advance(30)
    second = store.claim(job.id, 1)
    assert second is not None
    assert (second.state, second.attempts) == (JobState.SUBMITTING, 2)
    assert second.claimed_at == claimed_at  # the first claim's time is kept
    history = store.get(job.id, details=True).events
    assert [(e.kind, e.from_state, e.to_state, e.detail) for e in history[1:]] == [
        ("claimed", "queued", "submitting", {"attempt": 1}),
        ("claimed", "submitting", "submitting", {"attempt": 2}),
    ]


def test_a_queued_job_is_not_claimed_by_a_retry_message(store: JobStore) -> None:
    job = new_job(store)
    assert store.claim(job.id, 1) is None
    assert store.get(job.id).state is JobState.QUEUED


def test_a_submitted_or_terminal_job_cannot_be_claimed(store: JobStore) -> None:
    job = submitted_job(store)
    assert store.claim(job.id, 1) is None
    assert store.claim(job.id, 0) is None
    store.cancel(job.id)
    assert store.claim(job.id, 1) is None
    assert store.get(job.id).state is JobState.CANCELED


def test_claiming_an_unknown_job_returns_none(store: JobStore) -> None:
    assert store.claim(str(uuid.uuid4()), 0) is None


# -- submitted --------------------------------------------------------------------------------


def test_mark_submitted_moves_only_a_submitting_job(store: JobStore, clock: Clock) -> None:
    job = new_job(store)
    assert not store.mark_submitted(job.id, {})
    assert store.get(job.id).state is JobState.QUEUED
    store.claim(job.id, 0)
    clock.advance(1)
    assert store.mark_submitted(job.id, {"attempt": 1})
    after = store.get(job.id)
    assert after.state is JobState.SUBMITTED
    assert after.submitted_at == clock.now
    assert not store.mark_submitted(job.id, {"attempt": 1})
    assert event_kinds(store, job) == ["created", "claimed", "acknowledged"]


# -- results ----------------------------------------------------------------------------------


def test_first_result_is_accepted_and_counted(store: JobStore) -> None:
    job = submitted_job(store, number_results=2)
    assert store.record_result(image(job), "webhook") is ResultOutcome.ACCEPTED
    after = store.get(job.id)
    assert after.state is JobState.SUBMITTED
    assert after.images_received == 1
    assert after.cost_usd == Decimal("0.045")
    [stored] = after.images
    assert (stored.source, stored.late, stored.seed, stored.nsfw) == ("webhook", False, 42, False)
    assert stored.cost_usd == Decimal("0.045")


def test_duplicate_result_is_stored_once_and_charged_once(store: JobStore) -> None:
    job = submitted_job(store, number_results=2)
    result = image(job)
    assert store.record_result(result, "webhook") is ResultOutcome.ACCEPTED
    assert store.record_result(result, "webhook") is ResultOutcome.DUPLICATE
    assert store.record_result(result, "poll") is ResultOutcome.DUPLICATE
    after = store.get(job.id)
    assert stored_rows(store, job) == 1
    assert after.images_received == 1
    assert after.cost_usd == Decimal("0.045")
    assert after.state is JobState.SUBMITTED


def test_job_completes_once_its_number_results_distinct_images_are_in_and_stored(
    store: JobStore, clock: Clock
) -> None:
    job = submitted_job(store, number_results=3)
    first = image(job)
    store.record_result(first, "webhook")
    store.record_result(first, "webhook")  # a duplicate is not a second image
    store.record_result(image(job), "webhook")
    assert store.get(job.id).state is JobState.SUBMITTED
    clock.advance(5)
    assert store.record_result(image(job), "poll") is ResultOutcome.ACCEPTED
    # every result is in, none is stored yet: the job waits for its copies
    received = store.get(job.id, details=True)
    assert (received.state, received.images_received) == (JobState.SUBMITTED, 3)
    assert received.events[-1].kind == "acknowledged"
    clock.advance(5)
    assert keep_images(store, job.id) == 3
    after = store.get(job.id, details=True)
    assert after.state is JobState.SUCCEEDED
    assert after.finished_at == clock.now
    assert after.events[-1].kind == "completed"
    assert after.events[-1].detail == {"images": 3}


def test_a_webhook_beating_the_submitted_write_completes_a_submitting_job(
    store: JobStore,
) -> None:
    job = new_job(store)
    store.claim(job.id, 0)
    assert store.record_result(image(job), "webhook") is ResultOutcome.ACCEPTED
    keep_images(store, job.id)
    after = store.get(job.id, details=True)
    assert after.state is JobState.SUCCEEDED
    assert (after.events[-1].from_state, after.events[-1].to_state) == ("submitting", "succeeded")
    # the worker's late "submitted" write must not drag it back
    assert not store.mark_submitted(job.id, {})
    assert store.get(job.id).state is JobState.SUCCEEDED


@pytest.mark.parametrize("end", ["cancel", "fail"])
def test_late_result_on_a_terminal_job_is_stored_with_its_cost_and_changes_no_state(
    store: JobStore, end: str
) -> None:
    job = submitted_job(store, number_results=1)
    if end == "cancel":
        store.cancel(job.id)
    else:
        store.fail(job.id, Failure("provider", "boom"))
    before = store.get(job.id, details=True)
    assert store.record_result(image(job, cost="0.03"), "webhook") is ResultOutcome.LATE
    after = store.get(job.id, details=True)
    assert after.state is before.state
    assert after.finished_at == before.finished_at
    assert after.events == before.events
    assert after.cost_usd == Decimal("0.03")  # Runware bills it, so spend counts it
    [stored] = after.images
    assert stored.late
    assert stored.cost_usd == Decimal("0.03")


def test_an_image_past_number_results_is_refused_and_keeps_the_job_succeeded(
    store: JobStore,
) -> None:
    job = submitted_job(store, number_results=1)
    store.record_result(image(job), "webhook")
    keep_images(store, job.id)
    assert store.record_result(image(job), "poll") is ResultOutcome.TOO_MANY_IMAGES
    after = store.get(job.id, details=True)
    assert after.state is JobState.SUCCEEDED
    assert after.images_received == len(after.images) == 1
    assert [e.kind for e in after.events].count("completed") == 1


def test_result_for_an_unknown_task_stores_nothing(store: JobStore) -> None:
    job = submitted_job(store)
    stray = IncomingResult(str(uuid.uuid4()), str(uuid.uuid4()), "u", None, 1, Decimal(1), None)
    assert store.record_result(stray, "webhook") is ResultOutcome.UNKNOWN_TASK
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(results)).scalar_one() == 0
    assert store.get(job.id).cost_usd == 0


def test_result_without_a_cost_counts_the_image_but_no_spend(store: JobStore) -> None:
    job = submitted_job(store, number_results=2)
    store.record_result(image(job, cost=None), "webhook")
    after = store.get(job.id)
    assert after.images_received == 1
    assert after.cost_usd == Decimal(0)
    assert after.images[0].cost_usd is None


def test_concurrent_distinct_results_complete_the_job_exactly_once_with_the_exact_cost(
    store: JobStore,
) -> None:
    count = 8
    job = submitted_job(store, number_results=count)
    outcomes = all_at_once(count, lambda i: store.record_result(image(job, cost="0.045"), "x"))
    assert outcomes == [ResultOutcome.ACCEPTED] * count
    assert store.get(job.id).state is JobState.SUBMITTED
    keep_images(store, job.id)
    after = store.get(job.id, details=True)
    assert after.state is JobState.SUCCEEDED
    assert after.images_received == count
    assert after.cost_usd == Decimal("0.045") * count == Decimal("0.36")
    assert [e.kind for e in after.events].count("completed") == 1


def test_more_concurrent_results_than_asked_for_complete_the_job_once(store: JobStore) -> None:
    job = submitted_job(store, number_results=2)
    outcomes = all_at_once(8, lambda i: store.record_result(image(job, cost="0.01"), "x"))
    keep_images(store, job.id)
    after = store.get(job.id, details=True)
    assert after.state is JobState.SUCCEEDED
    assert [e.kind for e in after.events].count("completed") == 1
    assert after.images_received == len(after.images) == 2
    assert after.cost_usd == Decimal("0.02")
    assert sorted(map(str, outcomes)) == ["accepted"] * 2 + ["too_many_images"] * 6


def test_concurrent_duplicates_of_one_result_are_stored_once(store: JobStore) -> None:
    job = submitted_job(store, number_results=2)
    result = image(job)
    outcomes = all_at_once(8, lambda _: store.record_result(result, "webhook"))
    assert sorted(map(str, outcomes)) == ["accepted"] + ["duplicate"] * 7
    assert stored_rows(store, job) == 1
    assert store.get(job.id).cost_usd == Decimal("0.045")


class Recorder:
    """A store observer keeping what it was told, from whichever thread told it."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []
        self.outcomes: list[ResultOutcome] = []

    def transitioned(self, transition: Transition) -> None:
        self.transitions.append(transition)

    def result_recorded(
        self, outcome: ResultOutcome, cost_usd: Decimal | None, source: str
    ) -> None:
        self.outcomes.append(outcome)


# a race is won or lost by microseconds: each runs many times, released by a barrier
RACES = range(40)


@pytest.mark.parametrize("race", RACES)
def test_two_images_arriving_and_stored_together_complete_a_two_image_job_once(
    store: JobStore, race: int
) -> None:
    job = submitted_job(store, number_results=2)
    recorder = Recorder()
    store.observers.append(recorder)
    outcomes = all_at_once(2, lambda _: store.record_result(image(job), "webhook"))
    assert outcomes == [ResultOutcome.ACCEPTED] * 2
    assert recorder.outcomes == [ResultOutcome.ACCEPTED] * 2
    received = store.get(job.id)
    assert (received.state, received.images_received) == (JobState.SUBMITTED, 2)
    assert recorder.transitions == []
    # the two copies record their images at once: exactly one of them completes the job
    copies = copies_of(store)
    orders = copies.orders([(job.task_uuid, i.image_uuid) for i in received.images])
    recorded = all_at_once(
        2, lambda i: copies.stored(orders[i], kept_image(job.id, orders[i].image_uuid))
    )
    assert recorded == [True, True]
    after = store.get(job.id, details=True)
    assert (after.state, after.images_received) == (JobState.SUCCEEDED, 2)
    assert after.cost_usd == Decimal("0.09")
    [completed] = [e for e in after.events if e.kind == "completed"]
    assert (completed.from_state, completed.to_state) == ("submitted", "succeeded")
    assert completed.detail == {"images": 2}
    assert all(i.sha256 is not None for i in after.images)
    [transition] = recorder.transitions
    assert (transition.from_state, transition.to_state) == (JobState.SUBMITTED, JobState.SUCCEEDED)
    assert transition.job.images_received == 2


@pytest.mark.parametrize("race", RACES)
def test_two_copies_of_one_image_arriving_together_are_stored_and_counted_once(
    store: JobStore, race: int
) -> None:
    job = submitted_job(store, number_results=2)
    recorder = Recorder()
    store.observers.append(recorder)
    result = image(job)
    outcomes = all_at_once(2, lambda _: store.record_result(result, "webhook"))
    assert sorted(outcomes) == [ResultOutcome.ACCEPTED, ResultOutcome.DUPLICATE]
    assert sorted(recorder.outcomes) == sorted(outcomes)
    assert recorder.transitions == []
    after = store.get(job.id, details=True)
    assert stored_rows(store, job) == 1
    assert (after.state, after.images_received) == (JobState.SUBMITTED, 1)
    assert after.cost_usd == Decimal("0.045")
    assert "completed" not in [e.kind for e in after.events]


@pytest.mark.parametrize("race", RACES)
def test_a_result_racing_a_failure_is_counted_either_way_and_late_if_second(
    store: JobStore, race: int
) -> None:
    job = submitted_job(store, number_results=1)
    outcome, failed = all_at_once(
        2,
        lambda i: (
            store.record_result(image(job), "webhook")
            if i == 0
            else store.fail(job.id, Failure("provider", "boom"))
        ),
    )
    after = store.get(job.id, details=True)
    [stored] = after.images
    # Runware bills the image either way; a counted image is not stored yet, so the
    # failure lands whichever came first
    assert (after.images_received, after.cost_usd) == (1, Decimal("0.045"))
    assert failed
    assert after.state is JobState.FAILED
    assert outcome in (ResultOutcome.LATE, ResultOutcome.ACCEPTED)
    assert stored.late is (outcome is ResultOutcome.LATE)
    assert "completed" not in [e.kind for e in after.events]


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_recording_results_is_one_autocommitted_statement_on_postgresql(
    store: JobStore,
) -> None:
    job = submitted_job(store, number_results=1)
    sent: list[str] = []
    transactions: list[str] = []

    def executed(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    def began(conn: Any) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            transactions.append("BEGIN")

    event.listen(store.engine, "before_cursor_execute", executed)
    event.listen(store.engine, "begin", began)
    assert store.record_result(image(job), "webhook") is ResultOutcome.ACCEPTED
    late = store.record_results([image(job), image(job)], "webhook")
    assert [r.outcome for r in late] == [ResultOutcome.TOO_MANY_IMAGES] * 2
    assert len(sent) == 2
    assert transactions == []
    assert store.get(job.id).images_received == 1


def test_a_batch_of_results_is_recorded_as_each_would_be_alone(store: JobStore) -> None:
    two_images = submitted_job(store, number_results=2)
    one_image = submitted_job(store, number_results=1)
    finished = submitted_job(store, number_results=1)
    finished_image = str(uuid.uuid4())
    assert store.record_result(image(finished, image_uuid=finished_image), "webhook") is (
        ResultOutcome.ACCEPTED
    )
    stray = IncomingResult(str(uuid.uuid4()), str(uuid.uuid4()), "u", None, 1, None, None)
    recorder = Recorder()
    store.observers.append(recorder)
    first, repeated = image(one_image), image(two_images)
    batch = [
        image(two_images),
        first,
        stray,
        repeated,
        image(finished),
        first,  # the same delivery twice in one batch
        stray,
        image(one_image),  # a second, distinct image for a one-image job
        image(finished, image_uuid=finished_image),  # a finished job's known image
    ]

    recorded = store.record_results(batch, "webhook")

    outcomes = [r.outcome for r in recorded]
    assert outcomes == [
        ResultOutcome.ACCEPTED,
        ResultOutcome.ACCEPTED,
        ResultOutcome.UNKNOWN_TASK,
        ResultOutcome.ACCEPTED,
        ResultOutcome.TOO_MANY_IMAGES,
        ResultOutcome.DUPLICATE,
        ResultOutcome.UNKNOWN_TASK,
        ResultOutcome.TOO_MANY_IMAGES,
        ResultOutcome.DUPLICATE,
    ]
    assert recorder.outcomes == outcomes
    # every result names its job, a duplicate's and a late one's too; unknown tasks have none
    assert [r.job_id for r in recorded] == [
        two_images.id,
        one_image.id,
        None,
        two_images.id,
        finished.id,
        one_image.id,
        None,
        one_image.id,
        finished.id,
    ]
    both = store.get(two_images.id, details=True)
    assert (both.state, both.images_received, both.cost_usd) == (
        JobState.SUBMITTED,
        2,
        Decimal("0.09"),
    )
    single = store.get(one_image.id, details=True)
    assert (single.state, single.images_received, single.cost_usd) == (
        JobState.SUBMITTED,
        1,
        Decimal("0.045"),
    )
    done = store.get(finished.id)
    assert (done.images_received, done.cost_usd, len(done.images)) == (1, Decimal("0.045"), 1)
    # recording completes nothing: the copies do
    assert recorder.transitions == []
    for job in (two_images, one_image, finished):
        keep_images(store, job.id)
    assert sorted(t.job.id for t in recorder.transitions) == sorted(
        [two_images.id, one_image.id, finished.id]
    )
    assert all(t.to_state is JobState.SUCCEEDED for t in recorder.transitions)


@pytest.mark.parametrize("race", range(10))
def test_concurrent_batches_sharing_jobs_each_count_every_image_once(
    store: JobStore, race: int
) -> None:
    jobs_ = [submitted_job(store, number_results=2) for _ in range(6)]
    deliveries = [image(job, image_uuid=f"img-{n}") for job in jobs_ for n in range(2)]
    # the same deliveries in opposite orders: locks taken in any order but one would deadlock
    batches = [deliveries, deliveries[::-1]]
    outcomes = all_at_once(2, lambda i: store.record_results(batches[i], "webhook"))
    accepted = [r for batch in outcomes for r in batch if r.outcome is ResultOutcome.ACCEPTED]
    assert len(accepted) == len(deliveries)
    for job in jobs_:
        after = store.get(job.id, details=True)
        assert (after.state, after.images_received) == (JobState.SUBMITTED, 2)
        assert after.cost_usd == Decimal("0.09")


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_claims_and_transitions_find_their_jobs_by_id_however_many_share_the_state(
    store: JobStore,
) -> None:
    # a backlog the statistics have not seen: the planner must not read it through the
    # state index for each claim
    backlog = store.create_jobs([NewJob(PARAMS)] * 5000, tenant="acme", deadline_s=900.0)
    few = [job.id for job, _ in backlog[:10]]
    sent: list[tuple[str, Any]] = []

    def executed(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", executed)
    assert len(store.claim_many([(job_id, 0) for job_id in few])) == 10
    assert len(store.mark_submitted_many(few, {"attempt": 1})) == 10
    assert store.fail(few[0], Failure("provider", "boom"))
    event.remove(store.engine, "before_cursor_execute", executed)

    assert sent
    with store.engine.connect() as conn:
        # the admission count's statements find their one row by its key
        of_jobs = [(s, p) for s, p in sent if "runware_capacity" not in s]
        for statement, parameters in of_jobs:
            plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars())
            assert "ix_jobs_state_updated_at" not in plan, plan
            assert "jobs_pkey" in plan, plan


def test_losing_postgresql_while_recording_a_result_raises_store_unavailable() -> None:
    # nothing listens on port 1: connecting is refused at once
    store = JobStore(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/fluxfarm"))
    stray = IncomingResult(str(uuid.uuid4()), str(uuid.uuid4()), "u", None, 1, None, None)
    with pytest.raises(StoreUnavailable):
        store.record_result(stray, "webhook")
    store.engine.dispose()


def test_cost_is_exact_in_micro_dollars(store: JobStore) -> None:
    job = submitted_job(store, number_results=3)
    for _ in range(3):
        store.record_result(image(job, cost="0.045"), "webhook")
    total = store.get(job.id).cost_usd
    assert total == Decimal("0.135")
    assert str(total.normalize()) == "0.135"
    assert isinstance(total, Decimal)


def test_many_small_costs_sum_without_float_drift(store: JobStore) -> None:
    job = submitted_job(store, number_results=10)
    for _ in range(10):
        store.record_result(image(job, cost="0.1"), "webhook")
    assert sum([0.1] * 10) != 1.0  # what a float column would have summed to
    assert store.get(job.id).cost_usd == Decimal(1)


# -- fail, cancel, terminal -------------------------------------------------------------------


@pytest.mark.parametrize("reach", ["queued", "submitting", "submitted"])
def test_fail_records_the_reason_code_message_and_parameter(
    store: JobStore, clock: Clock, reach: str
) -> None:
    job = new_job(store)
    if reach != "queued":
        store.claim(job.id, 0)
    if reach == "submitted":
        store.mark_submitted(job.id, {})
    clock.advance(2)
    failure = Failure("validation", "width is wrong", code="invalidWidth", parameter="width")
    assert store.fail(job.id, failure)
    after = store.get(job.id, details=True)
    assert after.state is JobState.FAILED
    assert (after.failure_reason, after.failure_code) == ("validation", "invalidWidth")
    assert (after.failure_message, after.failure_parameter) == ("width is wrong", "width")
    assert after.finished_at == clock.now
    last = after.events[-1]
    assert (last.kind, last.from_state, last.to_state) == ("failed", reach, "failed")
    assert last.detail == {
        "reason": "validation",
        "code": "invalidWidth",
        "message": "width is wrong",
    }


@pytest.mark.parametrize("reach", ["queued", "submitting", "submitted"])
def test_cancel_moves_a_live_job_to_canceled(store: JobStore, reach: str) -> None:
    job = new_job(store)
    if reach != "queued":
        store.claim(job.id, 0)
    if reach == "submitted":
        store.mark_submitted(job.id, {})
    canceled = store.cancel(job.id, tenant="acme")
    assert canceled.state is JobState.CANCELED
    assert canceled.finished_at is not None
    with pytest.raises(JobNotFound):
        store.cancel(job.id, tenant="umbrella")


@pytest.mark.parametrize("end", ["succeeded", "failed", "canceled"])
def test_a_terminal_job_never_changes_again(store: JobStore, clock: Clock, end: str) -> None:
    job = submitted_job(store)
    if end == "succeeded":
        store.record_result(image(job), "webhook")
        keep_images(store, job.id)
    elif end == "failed":
        store.fail(job.id, Failure("provider", "first"))
    else:
        store.cancel(job.id)
    before = store.get(job.id, details=True)
    clock.advance(60)
    assert not store.fail(job.id, Failure("timeout", "second"))
    assert store.cancel(job.id).state.value == end
    assert not store.mark_submitted(job.id, {})
    assert store.claim(job.id, 0) is None
    assert store.claim(job.id, before.attempts) is None
    for state in JobState:
        assert not store.touch(job.id, state, "republished", {}) or state.value == end
    after = store.get(job.id, details=True)
    assert after.state.value == end
    assert after.failure_message == before.failure_message
    assert after.finished_at == before.finished_at
    assert [e.kind for e in after.events if e.kind != "republished"] == [
        e.kind for e in before.events
    ]


# -- the reaper's queries ---------------------------------------------------------------------


def test_stale_jobs_are_those_unchanged_in_a_state_for_longer_than_the_threshold(
    store: JobStore, clock: Clock
) -> None:
    old = new_job(store)
    clock.advance(100)
    fresh = new_job(store)
    submitting = new_job(store)
    store.claim(submitting.id, 0)
    cutoff = clock.advance(10)
    assert [j.id for j in store.stale_jobs(JobState.QUEUED, cutoff)] == [old.id, fresh.id]
    older_than_50s = cutoff - timedelta(seconds=50)
    assert [j.id for j in store.stale_jobs(JobState.QUEUED, older_than_50s)] == [old.id]
    assert [j.id for j in store.stale_jobs(JobState.SUBMITTING, cutoff)] == [submitting.id]
    assert store.stale_jobs(JobState.SUBMITTED, cutoff) == []
    assert len(store.stale_jobs(JobState.QUEUED, cutoff, limit=1)) == 1


def test_touch_restarts_a_jobs_clock_only_in_the_expected_state(
    store: JobStore, clock: Clock
) -> None:
    job = new_job(store)
    clock.advance(100)
    cutoff = clock.now
    assert not store.touch(job.id, JobState.SUBMITTING, "resubmitted", {})
    assert store.touch(job.id, JobState.QUEUED, "republished", {"why": "lost"})
    assert store.stale_jobs(JobState.QUEUED, cutoff) == []
    assert store.get(job.id).updated_at == clock.now
    last = store.get(job.id, details=True).events[-1]
    assert (last.kind, last.from_state, last.to_state, last.detail) == (
        "republished",
        "queued",
        "queued",
        {"why": "lost"},
    )


def test_overdue_jobs_are_live_jobs_past_their_deadline(store: JobStore, clock: Clock) -> None:
    queued = new_job(store, deadline_s=10)
    submitting = new_job(store, deadline_s=20)
    store.claim(submitting.id, 0)
    done = submitted_job(store)
    store.fail(done.id, Failure("provider", "x"))
    later = new_job(store, deadline_s=1000)
    assert store.overdue_jobs(clock.now) == []
    clock.advance(15)
    assert [j.id for j in store.overdue_jobs(clock.now)] == [queued.id]
    clock.advance(900)
    assert [j.id for j in store.overdue_jobs(clock.now)] == [queued.id, submitting.id]
    clock.advance(1000)
    assert {j.id for j in store.overdue_jobs(clock.now)} == {queued.id, submitting.id, later.id}


def test_get_with_details_returns_images_and_events_in_order(store: JobStore, clock: Clock) -> None:
    job = new_job(store, number_results=2)
    for step in (
        lambda: store.claim(job.id, 0),
        lambda: store.mark_submitted(job.id, {"attempt": 1}),
        lambda: store.record_result(image(job, "img-1"), "webhook"),
        lambda: store.record_result(image(job, "img-2"), "poll"),
        lambda: keep_images(store, job.id),
    ):
        clock.advance(1)
        step()
    detailed = store.get(job.id, details=True)
    assert [(e.kind, e.to_state) for e in detailed.events] == [
        ("created", "queued"),
        ("claimed", "submitting"),
        ("acknowledged", "submitted"),
        ("completed", "succeeded"),
    ]
    assert [e.at for e in detailed.events] == sorted(e.at for e in detailed.events)
    assert [i.image_uuid for i in detailed.images] == ["img-1", "img-2"]
    assert store.get(job.id).events == []


def test_count_by_state(store: JobStore) -> None:
    new_job(store)
    new_job(store)
    submitted_job(store)
    assert store.count_by_state() == {"queued": 2, "submitted": 1}


# -- migrations -------------------------------------------------------------------------------


def test_migrations_upgrade_is_idempotent_and_keeps_data(store: JobStore, store_url: str) -> None:
    job = new_job(store)
    upgrade(store_url)
    upgrade(store_url)
    assert store.get(job.id).id == job.id
    names = set(inspect(store.engine).get_table_names())
    assert {"jobs", "results", "events", "alembic_version"} <= names
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(jobs)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 1
