"""The reaper runs on time whatever the backlog: its queue is its own and its messages
expire after one interval, and one pass at a time holds the store's reaper lease.

A real worker and beat on Redis and PostgreSQL, 50,000 jobs queued, and a simulator that
refuses every submit with 429: the submit queue is full when the worker starts, and the
refusals then keep the jobs queued in the store (the fleet's claims paused) while the
passes are timed from the store's own record of each pass (the lease's `finished_at`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from farmdomain.jobs import JobState
from farmdomain.settings import Settings
from fluxfarm.demo import demo_requests
from fluxfarm.processes import Farm, free_port, simulated
from jobstore.engine import make_engine
from jobstore.leases import Leases
from jobstore.migrations import upgrade
from jobstore.schema import jobs
from producers.client import FluxfarmClient
from simulator.testing import SimulatorHandle
from tests.producers.conftest import BrokerQueue
from tests.services import fresh_postgres_database
from worker.reaper import LEASE_INTERVALS, REAPER_LEASE

# queueing 50,000 jobs outlasts the suite's default timeout on a machine another run shares
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

JOBS = 50_000
INTERVAL_S = 5.0
PASSES = 6
SIMULATOR_KEY = "reaper-key"


@pytest.fixture
def farm(tmp_path: Path, redis_url: str) -> Iterator[tuple[Farm, Settings]]:
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres_database())
        upgrade(database_url)
        farm = stack.enter_context(Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "logs"))
        simulator_url = farm.start_simulator(
            "--api-keys", SIMULATOR_KEY, "--submit-429-share", "1.0"
        )
        settings = simulated(
            farm,
            simulator_url,
            SIMULATOR_KEY,
            free_port(),
            webhook_secret="reaper-secret",
            broker_url=redis_url,
            database_url=database_url,
            reaper_interval_s=INTERVAL_S,
            # the passes stay light: this test times them, not what they recover
            queued_republish_after_s=3600,
            submitting_stale_after_s=3600,
        )
        yield farm, settings


def test_the_reaper_runs_within_two_intervals_behind_fifty_thousand_queued_jobs(
    farm: tuple[Farm, Settings],
) -> None:
    processes, settings = farm
    with FluxfarmClient(settings) as client:
        requests = demo_requests(JOBS)
        step = settings.submit_many_max
        for start in range(0, JOBS, step):
            client.submit_many(requests[start : start + step])
    backlog_before = BrokerQueue(settings.resolved_broker_url()).size()
    processes.start_worker("worker", concurrency=4, pool="threads")
    processes.start_beat()
    engine = make_engine(settings.resolved_database_url())
    leases = Leases(engine)
    passes: list[datetime] = []
    try:
        deadline = time.monotonic() + PASSES * LEASE_INTERVALS * INTERVAL_S + 60
        while len(passes) < PASSES and time.monotonic() < deadline:
            lease = leases.get(REAPER_LEASE)
            if lease is not None and lease.finished_at and lease.finished_at not in passes:
                passes.append(lease.finished_at)
            time.sleep(0.2)  # polling the store for the next pass
        # refused submits pause the fleet's claims, so the backlog moves from the broker to
        # the store: jobs queued there, none admitted
        with engine.connect() as conn:
            waiting = conn.execute(
                select(func.count()).where(jobs.c.state == JobState.QUEUED.value)
            ).scalar_one()
    finally:
        engine.dispose()

    refused = SimulatorHandle(settings.runware_url.removesuffix("/v1")).stats()
    # the fault landed: Runware refused submits and the backlog was still there throughout
    assert sum(refused["submits_rejected"].values()) > 0, refused
    assert backlog_before > 0
    assert waiting > JOBS // 2, f"only {waiting} jobs still waiting: the backlog did not stand"
    assert len(passes) == PASSES, f"{len(passes)} reaper passes seen"
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(passes)]
    assert max(gaps) <= LEASE_INTERVALS * INTERVAL_S, gaps
