"""The dispatcher against a real store, the simulator as Runware and a real SQLite broker:
jobs the cap or a rate refusal's pause leaves waiting stay queued with no message, and are
admitted in fair order between tenants as units free and once the pause is over."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from farmdomain.jobs import JobState
from farmdomain.settings import Settings
from farmdomain.values import Failure, utcnow
from jobstore.migrations import upgrade
from jobstore.tenant_shares import TenantShares
from simulator.testing import SimulatorHandle
from tests.worker.conftest import PARAMS, queued_jobs
from tests.worker.test_reaper import Broker
from worker.app import create_app
from worker.context import WorkerContext
from worker.dispatcher import dispatch_once
from worker.reaper import reap_once
from worker.tasks import submit_batch

CAP = 3


@pytest.fixture
def context(tmp_path: Path, sim: SimulatorHandle) -> Iterator[WorkerContext]:
    settings = Settings(
        data_dir=tmp_path,
        runware_url=sim.api_url,
        runware_api_key="sim-key",
        webhook_secret="dispatch-secret",
        runware_max_in_flight=CAP,
    )
    upgrade(settings.resolved_database_url())
    made = create_app(settings).context
    yield made
    made.close()


def states(context: WorkerContext, job_ids: list[str]) -> list[JobState]:
    return [context.store.get(job_id).state for job_id in job_ids]


def finish(context: WorkerContext, job_ids: list[str]) -> None:
    for job_id in job_ids:
        assert context.store.fail(job_id, Failure("provider", "done with it"))


def test_messages_beyond_the_cap_leave_their_jobs_queued_until_the_dispatcher_admits_them(
    context: WorkerContext,
) -> None:
    job_ids = queued_jobs(context, 7)
    # every job's message arrives: the first CAP are claimed and submitted, the rest wait
    submit_batch(context, [(job_id, 0) for job_id in job_ids])
    assert states(context, job_ids) == [JobState.SUBMITTED] * CAP + [JobState.QUEUED] * 4
    assert context.store.capacity_held() == (CAP, CAP)
    assert dispatch_once(context) == (0, True)

    finish(context, job_ids[:2])
    assert dispatch_once(context) == (2, True)
    assert states(context, job_ids)[3:] == [JobState.SUBMITTED] * 2 + [JobState.QUEUED] * 2
    assert context.store.capacity_held() == (CAP, CAP)

    finish(context, job_ids[2:5])
    assert dispatch_once(context) == (2, False)
    assert states(context, job_ids)[5:] == [JobState.SUBMITTED] * 2
    assert context.store.capacity_held() == (2, CAP)


def test_free_units_are_shared_between_the_tenants_that_wait(context: WorkerContext) -> None:
    backlog = queued_jobs(context, 12)
    others = [
        context.store.create_job(PARAMS, tenant="bravo", deadline_s=600)[0].id for _ in range(2)
    ]
    assert dispatch_once(context) == (0, False)  # no claim yet: the key has no row, no cap
    submit_batch(context, [(backlog[0], 0)])
    finish(context, backlog[:1])

    assert dispatch_once(context) == (CAP, True)
    admitted = [j for j in backlog + others if context.store.get(j).state is JobState.SUBMITTED]
    # bravo's two came after acme's twelve, yet one of them is in the first three
    assert len([job_id for job_id in admitted if job_id in others]) >= 1
    assert len(admitted) == CAP


def test_units_split_by_the_tenants_weights_and_messages_wait_behind_the_backlog(
    tmp_path: Path, sim: SimulatorHandle
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        runware_url=sim.api_url,
        runware_api_key="sim-key",
        webhook_secret="dispatch-secret",
        runware_max_in_flight=8,
    )
    upgrade(settings.resolved_database_url())
    context = create_app(settings).context
    try:
        TenantShares(context.store.engine).set_weight("acme", 3)
        acme = queued_jobs(context, 40)
        bravo = [
            context.store.create_job(PARAMS, tenant="bravo", deadline_s=600)[0].id
            for _ in range(20)
        ]
        # acme's messages arrive first and fill the cap; the claim that finds it full
        # starts a backlog, so bravo's messages, arriving with a unit free, take nothing
        submit_batch(context, [(job_id, 0) for job_id in acme])
        finish(context, acme[:1])
        submit_batch(context, [(job_id, 0) for job_id in bravo])
        assert states(context, bravo) == [JobState.QUEUED] * 20

        admitted = {"acme": 0, "bravo": 0}
        for _ in range(4):
            in_flight = [
                j for j in acme + bravo if context.store.get(j).state is JobState.SUBMITTED
            ]
            finish(context, in_flight)
            assert dispatch_once(context) == (8, True)
            for job_id in acme + bravo:
                job = context.store.get(job_id)
                if job.state is JobState.SUBMITTED:
                    admitted[job.tenant] += 1
        # the cap splits 3:1 between the backlogged tenants, round after round
        assert admitted == {"acme": 24, "bravo": 8}
    finally:
        context.close()


def test_the_reaper_republishes_no_job_that_waits_for_the_cap(context: WorkerContext) -> None:
    broker = Broker(context.app)
    job_ids = queued_jobs(context, CAP + 2)
    submit_batch(context, [(job_id, 0) for job_id in job_ids])
    broker.drain()
    later = utcnow() + timedelta(seconds=context.settings.queued_republish_after_s + 1)
    assert reap_once(context, later).republished == []
    assert broker.drain() == []
    # that pass found the submitted jobs done by polling: with their units free, the
    # waiting jobs may have lost their messages and go again
    assert context.store.capacity_held() == (0, CAP)
    assert len(reap_once(context, later).republished) == 2


def rate_limited(tmp_path: Path, sim: SimulatorHandle, **overrides: Any) -> WorkerContext:
    """A worker context whose every submit the simulator refuses with 429."""
    settings = Settings(
        data_dir=tmp_path,
        runware_url=sim.api_url,
        runware_api_key="sim-key",
        webhook_secret="dispatch-secret",
        **overrides,
    )
    upgrade(settings.resolved_database_url())
    sim.set_faults(submit_429_share=1.0)
    return create_app(settings).context


def events_of(context: WorkerContext, job_id: str) -> list[str]:
    return [event.kind for event in context.store.get(job_id, details=True).events]


@pytest.mark.parametrize("cap", [CAP, 0])
def test_a_rate_refusal_retries_past_the_attempt_count_and_pauses_the_fleets_claims(
    tmp_path: Path, sim: SimulatorHandle, cap: int
) -> None:
    context = rate_limited(
        tmp_path,
        sim,
        runware_max_in_flight=cap,
        submit_max_attempts=1,
        # the pause a 429 with no Retry-After sets outlasts a reaper pass that finds the
        # waiting jobs stale
        retry_base_delay_s=3.0,
        queued_republish_after_s=0.5,
    )
    try:
        refused, *waiting = queued_jobs(context, 3)
        for attempt in range(3):
            submit_batch(context, [(refused, attempt)])
        # three refusals against one allowed attempt: still retrying with its taskUUID
        assert events_of(context, refused).count("retry_scheduled") == 3
        assert context.store.get(refused).state is JobState.SUBMITTING
        paused_until = context.store.claims_paused_until()
        assert paused_until is not None
        assert paused_until > utcnow()

        # no worker's first claim takes anything meanwhile; the jobs wait, with no message
        broker = Broker(context.app)
        broker.drain()
        submit_batch(context, [(job_id, 0) for job_id in waiting])
        assert states(context, waiting) == [JobState.QUEUED] * 2
        assert dispatch_once(context) == (0, True)
        assert reap_once(context, utcnow() + timedelta(seconds=1)).republished == []
        assert broker.drain() == []

        # once the pause is over, the dispatcher admits what it left waiting; under a cap,
        # within the limit the refusal halved, which the refused job holds until it ends
        sim.reset_faults()
        while utcnow() <= paused_until:
            time.sleep(0.05)
        if cap:
            assert context.store.key_state().limit == cap // 2
            assert dispatch_once(context) == (0, True)
            finish(context, [refused])
        assert sum(dispatch_once(context)[0] for _ in range(2)) == 2
        assert states(context, waiting) == [JobState.SUBMITTED] * 2
    finally:
        context.close()


def test_other_transient_errors_keep_the_attempt_count(
    tmp_path: Path, sim: SimulatorHandle
) -> None:
    context = rate_limited(tmp_path, sim, submit_max_attempts=2, retry_base_delay_s=0.2)
    sim.set_faults(submit_429_share=0.0, submit_500_share=1.0)
    try:
        (job_id,) = queued_jobs(context, 1)
        submit_batch(context, [(job_id, 0)])
        submit_batch(context, [(job_id, 1)])
        job = context.store.get(job_id)
        assert job.state is JobState.FAILED
        assert job.failure_message is not None
        assert job.failure_message.startswith("gave up after 2 attempts")
        assert context.store.claims_paused_until() is None
    finally:
        context.close()


def test_a_rate_refused_job_fails_once_its_next_retry_would_pass_the_deadline(
    tmp_path: Path, sim: SimulatorHandle
) -> None:
    # every backoff is at least the base: far past a deadline one second away
    context = rate_limited(tmp_path, sim, retry_base_delay_s=60.0, retry_max_delay_s=60.0)
    random.seed(7)
    try:
        job_id = context.store.create_job(PARAMS, tenant="acme", deadline_s=1)[0].id
        submit_batch(context, [(job_id, 0)])
        job = context.store.get(job_id)
        assert job.state is JobState.FAILED
        assert job.failure_reason == "rate_limit"
        assert job.failure_message is not None
        assert "would land past the deadline" in job.failure_message
    finally:
        context.close()
