"""Backpressure from Runware with real processes: two workers (threads and prefork pools)
under a fleet-wide cap, the simulator as Runware refusing most submits with 429 for a window
opened once part of the backlog was accepted and closed once it refused enough, then
healthy. No job fails for the count of its attempts, and none is paid twice."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from farmdomain.jobs import JobState
from farmdomain.settings import Settings
from fluxfarm.demo import demo_requests
from jobstore.schema import events
from jobstore.store import JobStore
from producers.client import FluxfarmClient
from simulator.testing import SimulatorHandle
from tests.integration.capped import capped_pipeline

# the wait for every job may take its whole timeout on a machine another run shares
pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

CAP = 20
JOBS = 300
# the window opens once this many tasks were accepted, and closes once this many were refused
# (the refusals halve the fleet's limit under the cap, so the window sends Runware fewer
# requests the longer it lasts)
ACCEPTED_BEFORE = 60
REFUSED_IN_WINDOW = 100
# fewer than the refusals each claimed job meets in the window: counting attempts would fail it
MAX_ATTEMPTS = 2
SIMULATOR_KEY = "backpressure-key"


@dataclass
class Pipeline:
    settings: Settings
    simulator: SimulatorHandle


@pytest.fixture
def pipeline(tmp_path: Path, redis_url: str) -> Iterator[Pipeline]:
    with capped_pipeline(
        tmp_path,
        redis_url,
        SIMULATOR_KEY,
        CAP,
        latency_s=0.5,
        submit_max_attempts=MAX_ATTEMPTS,
        retry_base_delay_s=0.5,
        retry_max_delay_s=2,
    ) as (farm, started):
        farm.start_worker("worker-b", concurrency=4, pool="prefork")
        simulator = SimulatorHandle(started.simulator_url)
        yield Pipeline(started.settings, simulator)
        simulator.reset_faults()


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float = 120) -> None:
    until = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < until, f"{what} never happened"
        time.sleep(0.1)


def refused(simulator: SimulatorHandle) -> int:
    rejected = simulator.stats()["submits_rejected"]
    assert isinstance(rejected, dict)
    return int(rejected.get("rateLimitExceeded", 0))


def test_a_window_of_429s_fails_no_job_with_time_left_and_pays_none_twice(
    pipeline: Pipeline,
) -> None:
    simulator = pipeline.simulator
    requests = demo_requests(JOBS)
    with FluxfarmClient(pipeline.settings) as client:
        job_ids: list[str] = []
        for start in range(0, JOBS, 100):
            job_ids += client.submit_many(requests[start : start + 100])
        wait_for(
            "the first acceptances",
            lambda: int(simulator.stats()["tasks_accepted"]) >= ACCEPTED_BEFORE,
        )
        simulator.set_faults(submit_429_share=0.9)
        wait_for("the window's refusals", lambda: refused(simulator) >= REFUSED_IN_WINDOW)
        simulator.reset_faults()
        jobs = client.wait_all(job_ids, timeout=300)

    # every job succeeds: none failed for rate_limit, or for anything else
    assert {job.id: (job.state, job.failure_message) for job in jobs if job.failure_reason} == {}
    assert {job.state for job in jobs} == {JobState.SUCCEEDED}
    # the fault landed, and jobs met more refusals than the attempt count would have allowed
    assert refused(simulator) >= REFUSED_IN_WINDOW
    assert max(job.attempts for job in jobs) > MAX_ATTEMPTS
    # one job is one taskUUID, charged once
    stats = simulator.stats()
    assert stats["tasks_accepted"] == JOBS
    assert sum((job.cost_usd for job in jobs), Decimal(0)) == Decimal(
        str(stats["charged_usd_exact"])
    )
    store = JobStore.from_settings(pipeline.settings)
    try:
        # the refusals paused the fleet's claims, and every unit came back
        assert store.claims_paused_until() is not None
        assert store.capacity_held() == (0, CAP)
        query = select(func.count()).where(events.c.kind == "retry_scheduled")
        with store.engine.connect() as conn:
            assert conn.execute(query).scalar_one() >= REFUSED_IN_WINDOW // 10
    finally:
        store.engine.dispose()
