"""The fleet-wide cap with real processes: three workers (prefork and threads pools), the
simulator as Runware at a one-second generation, one worker killed with SIGKILL mid-run and
another killing itself with SIGKILL right after a claim, holding its units."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from farmdomain.jobs import JobState
from farmdomain.settings import Settings
from fluxfarm.demo import demo_requests
from fluxfarm.processes import Child, Farm
from jobstore.schema import events
from jobstore.store import JobStore
from producers.client import FluxfarmClient
from tests.integration.capped import capped_pipeline
from tests.integration.chaos.crashing_worker import hits

# the wait for every job may take its whole timeout on a machine another run shares
pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

CAP = 20
# the proof runs 2,000 jobs; 300 at the cap's pace keep this test under a minute
JOBS = 300
SIMULATOR_KEY = "admission-key"
# worker-c dies, as a kill -9 would, right after its tenth claim, with the batch claimed
CRASHING_APP = "tests.integration.chaos.crashing_worker"


@dataclass
class CappedFarm:
    farm: Farm
    settings: Settings
    simulator_url: str
    workers: list[Child]
    ledger: Path

    def stats(self) -> dict[str, object]:
        found: dict[str, object] = httpx.get(f"{self.simulator_url}/_sim/stats", timeout=5).json()
        return found


@pytest.fixture
def capped(tmp_path: Path, redis_url: str) -> Iterator[CappedFarm]:
    # every image takes a second: the cap, not the workers, sets the pace
    with capped_pipeline(
        tmp_path,
        redis_url,
        SIMULATOR_KEY,
        CAP,
        latency_s=1,
        # short clocks, so a killed worker's claims are resubmitted within the test
        reaper_interval_s=1,
        submitting_stale_after_s=5,
        submitted_poll_after_s=20,
    ) as (farm, pipeline):
        ledger = tmp_path / "crashes"
        plan = {"windows": ["after_claim"], "on_job": 10, "ledger": str(ledger)}
        workers = [
            pipeline.worker,
            farm.start_worker("worker-b", concurrency=4, pool="prefork"),
            farm.start_worker(
                "worker-c",
                concurrency=8,
                pool="threads",
                app=CRASHING_APP,
                extra_env={"FLUXFARM_TEST_CRASH_PLAN": json.dumps(plan)},
            ),
        ]
        yield CappedFarm(farm, pipeline.settings, pipeline.simulator_url, workers, ledger)


def test_three_workers_never_pass_the_cap_and_a_killed_one_loses_no_capacity(
    capped: CappedFarm,
) -> None:
    requests = demo_requests(JOBS)
    with FluxfarmClient(capped.settings) as client:
        job_ids: list[str] = []
        for start in range(0, JOBS, 100):
            job_ids += client.submit_many(requests[start : start + 100])
        # SIGKILL of the prefork worker once the farm is well into the backlog
        store = JobStore.from_settings(capped.settings)
        deadline = time.monotonic() + 120
        while store.count_by_state().get("succeeded", 0) < JOBS // 3:
            assert time.monotonic() < deadline, store.count_by_state()
            time.sleep(0.1)
        capped.farm.kill(capped.workers[1])
        jobs = client.wait_all(job_ids, timeout=240)

    assert {job.id: job.state for job in jobs if job.state is not JobState.SUCCEEDED} == {}
    stats = capped.stats()
    most = stats["max_in_flight_per_key"]
    assert isinstance(most, dict)
    # the cap is respected from Runware's side, and used
    assert 18 <= max(most.values()) <= CAP, most
    # one job is one taskUUID: more tasks or images billed than asked for is a double payment
    assert stats["tasks_accepted"] == JOBS
    assert stats["images_generated"] == sum(job.number_results for job in jobs)
    assert sum((job.cost_usd for job in jobs), Decimal(0)) == Decimal(
        str(stats["charged_usd_exact"])
    )
    # every unit came back with its job's terminal transition, the killed workers' too
    assert hits(capped.ledger) == ["after_claim"]
    query = select(func.count()).where(events.c.kind == "resubmitted")
    with store.engine.connect() as conn:
        assert conn.execute(query).scalar_one() >= 1
    assert store.capacity_held() == (0, CAP)
    store.engine.dispose()
