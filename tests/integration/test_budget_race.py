"""The budget race with real processes: 8 worker threads in 2 worker processes claim the jobs
of 2 tenants at once, each tenant with a daily budget of 10 of its jobs' estimates and more
jobs queued than fit, on PostgreSQL and on SQLite; the simulator as Runware."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from farmdomain.jobs import Job, JobState
from farmdomain.pricing import TenantBudget, estimate_usd
from farmdomain.request_schema import parse_request
from farmdomain.settings import Settings
from fluxfarm.processes import Child, Farm, start_pipeline
from jobstore.budgets import set_budget
from jobstore.store import JobStore
from producers.queueing import JobQueue, Submission
from tests.services import fresh_postgres_database

pytestmark = pytest.mark.integration

SIMULATOR_KEY = "budget-race-key"
FIT = 10
JOBS_PER_TENANT = 25
# $0.03 and $0.045 a job: each tenant's budget is 10 of its own jobs
REQUESTS = {
    "acme": {"positivePrompt": "a salt cathedral", "width": 1024, "height": 1024},
    "globex": {"positivePrompt": "a salt cathedral", "width": 1536, "height": 1024},
}


@dataclass
class RaceFarm:
    settings: Settings
    simulator_url: str
    workers: list[Child]

    def stats(self) -> dict[str, object]:
        found: dict[str, object] = httpx.get(f"{self.simulator_url}/_sim/stats", timeout=5).json()
        return found


@pytest.fixture(params=["postgresql", "sqlite"])
def race(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Iterator[RaceFarm]:
    with ExitStack() as stack:
        store_url = (
            {"database_url": stack.enter_context(fresh_postgres_database())}
            if request.param == "postgresql"
            else {}
        )
        farm = stack.enter_context(Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "logs"))
        pipeline = start_pipeline(
            farm,
            api_key=SIMULATOR_KEY,
            simulator_flags=("--fast-images",),
            worker_name="worker-a",
            pool="threads",
            concurrency=4,
            broker_url=redis_url,
            webhook_secret="budget-race-secret",
            # one job a message, so that every claim is a transaction of its own
            submit_batch_max=1,
            **store_url,
        )
        second = farm.start_worker("worker-b", concurrency=4, pool="threads")
        yield RaceFarm(pipeline.settings, pipeline.simulator_url, [pipeline.worker, second])


def _queue_everything(settings: Settings, store: JobStore) -> list[str]:
    """Every tenant's jobs queued at once, interleaved, more than its budget holds.

    Committed and published as a producer does, without its early refusal (which has its
    own tests): here every job must reach a claim, as jobs queued before any was claimed do.
    """
    queues = {tenant: JobQueue(settings, store, tenant) for tenant in REQUESTS}
    job_ids: list[str] = []
    try:
        for _ in range(JOBS_PER_TENANT):
            for tenant, params in REQUESTS.items():
                submission = Submission(
                    parse_request(dict(params)), None, None, time.perf_counter()
                )
                [(job, _created)] = queues[tenant].queue([submission])
                job_ids.append(job.id)
    finally:
        for queue in queues.values():
            queue.close()
    return job_ids


def test_concurrent_claimers_never_pass_a_tenants_budget_nor_pay_a_job_twice(
    race: RaceFarm,
) -> None:
    store = JobStore.from_settings(race.settings)
    budgets = {tenant: estimate_usd(params) * FIT for tenant, params in REQUESTS.items()}
    for tenant, budget in budgets.items():
        set_budget(store.engine, TenantBudget(tenant, budget, None))

    job_ids = _queue_everything(race.settings, store)
    deadline = time.monotonic() + 180
    while any(not JobState(state).terminal for state in store.count_by_state()):
        assert time.monotonic() < deadline, store.count_by_state()
        time.sleep(0.2)
    jobs = [store.get(job_id, details=True) for job_id in job_ids]

    for tenant, budget in budgets.items():
        mine = [job for job in jobs if job.tenant == tenant]
        spent = sum((job.cost_usd for job in mine), Decimal(0))
        largest_error = max(abs(job.cost_usd - job.estimate_usd) for job in mine if job.images)
        assert spent <= budget + largest_error, (tenant, spent, budget)
        succeeded = [job for job in mine if job.state is JobState.SUCCEEDED]
        assert len(succeeded) == FIT, tenant
        refused = [job for job in mine if job.state is JobState.FAILED]
        assert len(refused) == JOBS_PER_TENANT - FIT
        assert {_failure(job) for job in refused} == {
            ("quota", f"tenant {tenant}'s daily budget of ${budget.normalize():f} would be passed")
        }
        # a refused job was never claimed, so never sent
        assert {job.claimed_at for job in refused} == {None}
    stats = race.stats()
    # one POST accepted per job paid: none paid twice, and Runware charged what the store holds
    assert stats["tasks_accepted"] == 2 * FIT
    assert Decimal(str(stats["charged_usd_exact"])) == sum((j.cost_usd for j in jobs), Decimal(0))
    # both processes took part in the race
    for worker in race.workers:
        assert '"status":"submitting"' in worker.log(), worker.name
    store.engine.dispose()


def _failure(job: Job) -> tuple[str | None, str | None]:
    return job.failure_reason, job.failure_message
