"""Batched submission: one POST carrying several jobs, against a real store and the
simulator as Runware."""

from __future__ import annotations

from collections.abc import Callable

from farmdomain.jobs import JobState
from simulator.testing import SimulatorHandle
from tests.worker.conftest import PARAMS, queued_jobs
from worker import tasks
from worker.context import WorkerContext


def test_one_post_carries_the_batch_and_each_job_is_judged_on_its_own(
    contexts: Callable[[bool], WorkerContext],
    sim: SimulatorHandle,
) -> None:
    context = contexts(False)
    good = queued_jobs(context, 4)
    # bypasses our own validation, as a rule Runware tightened later would
    (bad,) = queued_jobs(context, 1, PARAMS | {"width": 100})
    already_claimed = good[0]
    assert context.store.claim(already_claimed, 0) is not None
    requests_before = sim.stats()["requests"]

    tasks.submit_batch(context, [(job_id, 0) for job_id in [*good, bad]])

    assert sim.stats()["requests"] == requests_before + 1
    assert sim.stats()["tasks_accepted"] == 3
    states = {job_id: context.store.get(job_id).state for job_id in [*good, bad]}
    # a redelivered message for a job already claimed elsewhere claims and sends nothing
    assert states[already_claimed] is JobState.SUBMITTING
    assert [states[job_id] for job_id in good[1:]] == [JobState.SUBMITTED] * 3
    failed = context.store.get(bad)
    assert (failed.state, failed.failure_reason, failed.failure_parameter) == (
        JobState.FAILED,
        "validation",
        "width",
    )
    history = context.store.get(good[1], details=True).events
    acknowledged = [e for e in history if e.kind == "acknowledged"]
    assert acknowledged[0].detail["batch"] == 4


def test_a_batch_near_the_budget_refuses_only_the_jobs_that_do_not_fit(
    contexts: Callable[[bool], WorkerContext],
    sim: SimulatorHandle,
) -> None:
    context = contexts(True)  # $0.10 a day; each job is estimated at $0.045
    job_ids = queued_jobs(context, 3)

    tasks.submit_batch(context, [(job_id, 0) for job_id in job_ids])

    states = [context.store.get(job_id).state for job_id in job_ids]
    assert states == [JobState.SUBMITTED, JobState.SUBMITTED, JobState.FAILED]
    assert context.store.get(job_ids[2]).failure_code == "dailyBudgetExceeded"
    assert sim.stats()["tasks_accepted"] == 2
