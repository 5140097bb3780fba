"""Tenants' hard budgets in the store, on SQLite and PostgreSQL: reserved by the first claim,
settled by the reported cost, released by a job that ends without charge."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest

from farmdomain.errors import BudgetExceeded
from farmdomain.jobs import Job, JobState
from farmdomain.pricing import Period, TenantBudget
from farmdomain.values import Failure, IncomingResult, ResultOutcome
from jobstore import budgets
from jobstore.store import JobStore
from tests.jobstore.conftest import Clock

# 1024 x 1024: $0.03 a job
PARAMS = {"positivePrompt": "a salt cathedral", "width": 1024, "height": 1024}
ESTIMATE = Decimal("0.03")


@pytest.fixture
def tenant() -> str:
    # the PostgreSQL database is shared by the session's tests: each has tenants of its own
    return f"acme-{uuid.uuid4().hex[:8]}"


def _queue(store: JobStore, clock: Clock, tenant: str, count: int) -> list[Job]:
    """`count` new jobs, oldest first: a claim takes them in that order."""
    made = []
    for _ in range(count):
        made.append(store.create_job(PARAMS, tenant=tenant, deadline_s=600)[0])
        clock.advance(1)
    return made


def _claim(store: JobStore, queued: list[Job]) -> dict[str, Job]:
    return {job.id: job for job in store.claim_many([(job.id, 0) for job in queued])}


def _result(job: Job, cost: str) -> IncomingResult:
    return IncomingResult(
        job.task_uuid, str(uuid.uuid4()), "https://im.example/x.jpg", None, 1, Decimal(cost), False
    )


def test_a_first_claim_past_the_daily_budget_fails_with_quota_naming_it(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    budgets.set_budget(store.engine, TenantBudget(tenant, ESTIMATE * 2, None))
    queued = _queue(store, clock, tenant, 3)

    taken = _claim(store, queued)

    states = [taken[job.id].state for job in queued]
    assert states == [JobState.SUBMITTING, JobState.SUBMITTING, JobState.FAILED]
    refused = store.get(queued[2].id, details=True)
    assert refused.failure_reason == "quota"
    assert refused.failure_code == "tenantDailyBudgetExceeded"
    assert refused.failure_message == f"tenant {tenant}'s daily budget of $0.06 would be passed"
    assert refused.claimed_at is None
    assert [e.kind for e in refused.events] == ["created", "failed"]


def test_the_monthly_budget_binds_across_days(store: JobStore, tenant: str, clock: Clock) -> None:
    budgets.set_budget(store.engine, TenantBudget(tenant, ESTIMATE * 5, ESTIMATE * 2))
    _claim(store, _queue(store, clock, tenant, 1))
    clock.advance(timedelta(days=1).total_seconds())

    [first, second] = _queue(store, clock, tenant, 2)
    taken = _claim(store, [first, second])

    assert taken[first.id].state is JobState.SUBMITTING
    assert taken[second.id].failure_code == "tenantMonthlyBudgetExceeded"
    assert f"tenant {tenant}'s monthly budget of $0.06" in (taken[second.id].failure_message or "")


def test_other_tenants_and_tenants_without_a_budget_are_not_held(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    budgets.set_budget(store.engine, TenantBudget(tenant, Decimal(0), None))
    other = f"{tenant}-other"
    queued = _queue(store, clock, tenant, 1) + _queue(store, clock, other, 2)

    taken = _claim(store, queued)

    assert [taken[job.id].state for job in queued] == [
        JobState.FAILED,
        JobState.SUBMITTING,
        JobState.SUBMITTING,
    ]


def test_a_retry_reserves_nothing_again(store: JobStore, tenant: str, clock: Clock) -> None:
    budgets.set_budget(store.engine, TenantBudget(tenant, ESTIMATE, None))
    [job] = _queue(store, clock, tenant, 1)
    _claim(store, [job])

    retried = store.claim(job.id, 1)

    assert retried is not None
    assert (retried.state, retried.attempts) == (JobState.SUBMITTING, 2)
    [daily] = budgets.standings(store.engine, clock.now, tenant)
    assert (daily.used_usd, daily.reserved_usd, daily.remaining_usd) == (
        Decimal(0),
        ESTIMATE,
        Decimal(0),
    )


def test_a_job_ending_without_charge_releases_its_reservation(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    budgets.set_budget(store.engine, TenantBudget(tenant, ESTIMATE, None))
    [first, second] = _queue(store, clock, tenant, 2)
    assert _claim(store, [first])[first.id].state is JobState.SUBMITTING

    store.fail(first.id, Failure("provider", "refused by Runware"))

    assert _claim(store, [second])[second.id].state is JobState.SUBMITTING


def test_the_reported_cost_settles_the_reservation(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    budgets.set_budget(store.engine, TenantBudget(tenant, Decimal("0.05"), None))
    [first, second] = _queue(store, clock, tenant, 2)
    _claim(store, [first])

    # reported below its estimate: the second job fits only because the first settled
    assert store.record_result(_result(first, "0.02"), "webhook") is ResultOutcome.ACCEPTED

    assert _claim(store, [second])[second.id].state is JobState.SUBMITTING
    [daily] = budgets.standings(store.engine, clock.now, tenant)
    assert (daily.used_usd, daily.reserved_usd) == (Decimal("0.02"), ESTIMATE)
    assert daily.remaining_usd == Decimal("0")


def test_a_canceled_job_keeps_its_reservation_and_its_late_image_counts(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    budgets.set_budget(store.engine, TenantBudget(tenant, Decimal("0.05"), None))
    [job] = _queue(store, clock, tenant, 1)
    _claim(store, [job])
    store.cancel(job.id)

    [held] = budgets.standings(store.engine, clock.now, tenant)
    late = store.record_result(_result(job, "0.04"), "webhook")
    [settled] = budgets.standings(store.engine, clock.now, tenant)

    assert (held.used_usd, held.reserved_usd) == (Decimal(0), ESTIMATE)
    assert late is ResultOutcome.LATE
    assert (settled.used_usd, settled.reserved_usd) == (Decimal("0.04"), Decimal(0))
    assert settled.remaining_usd == Decimal("0.01")


def test_the_early_check_refuses_what_the_remaining_budget_cannot_cover(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    budgets.set_budget(store.engine, TenantBudget(tenant, None, Decimal("0.05")))
    _claim(store, _queue(store, clock, tenant, 1))
    now = clock.now

    budgets.check_room(store.engine, tenant, [(None, Decimal("0.02"))], now)
    with pytest.raises(BudgetExceeded) as refused:
        budgets.check_room(store.engine, tenant, [(None, ESTIMATE)], now)

    assert str(refused.value) == (
        f"tenant {tenant}'s monthly budget of $0.05 would be passed: $0.02 remains and the"
        " jobs are estimated at $0.03"
    )
    budgets.check_room(store.engine, f"{tenant}-unbudgeted", [(None, Decimal(1000))], now)


def test_a_budget_set_again_replaces_the_last(store: JobStore, tenant: str, clock: Clock) -> None:
    budgets.set_budget(store.engine, TenantBudget(tenant, Decimal(5), Decimal(100), 0.5))
    budgets.set_budget(store.engine, TenantBudget(tenant, None, Decimal(80)))

    assert budgets.budgets(store.engine, tenant) == [TenantBudget(tenant, None, Decimal(80))]
    [monthly] = budgets.standings(store.engine, clock.now, tenant)
    assert monthly.period is Period.MONTHLY
    assert monthly.since == clock.now.replace(day=1, hour=0)
