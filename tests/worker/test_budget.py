"""The budgets: a job whose estimate would pass the farm's daily budget or its tenant's is
failed (reason quota) instead of submitted, against a real store and the simulator."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from farmdomain.jobs import JobState
from farmdomain.pricing import TenantBudget
from jobstore.budgets import set_budget
from simulator.testing import SimulatorHandle
from tests.worker.conftest import queued_jobs
from worker.context import WorkerContext

FAR_PAST = datetime(2000, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def _submit_all(context: WorkerContext, count: int) -> list[JobState]:
    job_ids = queued_jobs(context, count)
    for job_id in job_ids:
        context.batcher.run((job_id, 0))
    return [context.store.get(job_id).state for job_id in job_ids]


def test_a_job_that_would_pass_the_budget_fails_with_reason_quota_unsubmitted(
    contexts: Callable[[bool], WorkerContext],
    sim: SimulatorHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    context = contexts(True)

    states = _submit_all(context, 3)

    assert states[:2] == [JobState.SUBMITTED, JobState.SUBMITTED]
    assert states[2] is JobState.FAILED
    refused = context.store.stale_jobs(JobState.FAILED, updated_before=FAR_FUTURE)
    assert [(j.failure_reason, j.failure_code) for j in refused] == [
        ("quota", "dailyBudgetExceeded")
    ]
    assert sim.stats()["tasks_accepted"] == 2


def test_without_enforcement_the_budget_only_informs(
    contexts: Callable[[bool], WorkerContext],
    sim: SimulatorHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    context = contexts(False)

    states = _submit_all(context, 3)

    assert states == [JobState.SUBMITTED] * 3
    assert sim.stats()["tasks_accepted"] == 3


def test_committed_spend_counts_in_flight_jobs_at_their_estimate(
    contexts: Callable[[bool], WorkerContext],
    sim: SimulatorHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    context = contexts(True)
    _submit_all(context, 2)

    committed = context.store.committed_spend_since(FAR_PAST)

    assert committed == Decimal("0.090")


def test_a_job_past_its_tenants_budget_is_failed_unsubmitted_naming_the_budget(
    contexts: Callable[[bool], WorkerContext],
    sim: SimulatorHandle,
) -> None:
    context = contexts(False)
    # two jobs' estimates ($0.045 each)
    set_budget(context.store.engine, TenantBudget("acme", Decimal("0.09"), None))

    states = _submit_all(context, 3)

    assert states == [JobState.SUBMITTED, JobState.SUBMITTED, JobState.FAILED]
    [refused] = context.store.stale_jobs(JobState.FAILED, updated_before=FAR_FUTURE)
    assert (refused.failure_reason, refused.failure_code) == ("quota", "tenantDailyBudgetExceeded")
    assert refused.failure_message == "tenant acme's daily budget of $0.09 would be passed"
    assert sim.stats()["tasks_accepted"] == 2


def test_a_retried_submit_reserves_nothing_again(
    contexts: Callable[[bool], WorkerContext],
    sim: SimulatorHandle,
) -> None:
    context = contexts(False)
    set_budget(context.store.engine, TenantBudget("acme", Decimal("0.045"), None))
    [job_id] = queued_jobs(context, 1)
    sim.set_faults(submit_503_share=1.0)
    context.batcher.run((job_id, 0))
    assert context.store.get(job_id).state is JobState.SUBMITTING
    sim.reset_faults()

    # the retry's message, as the refusal published it: its job holds its whole budget
    context.batcher.run((job_id, 1))

    job = context.store.get(job_id)
    assert (job.state, job.attempts) == (JobState.SUBMITTED, 2)
    assert sim.stats()["tasks_accepted"] == 1
