"""A farm of real processes under a disruption, and the figures that say whether it held."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from farmdomain.errors import StoreUnavailable
from farmdomain.jobs import Job, JobState
from farmdomain.settings import Settings
from fluxfarm.demo import demo_requests
from fluxfarm.processes import Child, Farm, start_pipeline
from jobstore.schema import results
from producers.client import FluxfarmClient

SIMULATOR_KEY = "chaos-key"
WORKER_CONCURRENCY = 3

# Short clocks so that every recovery path (republish, resubmit, poll) runs within a test.
CHAOS_SETTINGS: dict[str, Any] = {
    "reaper_interval_s": 1,
    "queued_republish_after_s": 5,
    "submitting_stale_after_s": 4,
    "submitted_poll_after_s": 4,
    "connect_timeout_s": 1,
    "submit_timeout_s": 1.5,
    "retry_base_delay_s": 0.2,
    "retry_max_delay_s": 2,
    "submit_max_attempts": 40,
    "job_deadline_s": 240,
    "webhook_secret": "chaos-secret",
}


@dataclass
class ChaosFarm:
    farm: Farm
    settings: Settings
    simulator_url: str
    web_port: int
    workers: list[Child] = field(default_factory=list)

    def set_faults(self, **faults: Any) -> None:
        response = httpx.post(f"{self.simulator_url}/_sim/faults", json=faults, timeout=10)
        response.raise_for_status()

    def reset_faults(self) -> None:
        httpx.delete(f"{self.simulator_url}/_sim/faults", timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.simulator_url}/_sim/stats", timeout=10).json()
        return stats

    def start_worker(self, name: str) -> Child:
        worker = self.farm.start_worker(name, concurrency=WORKER_CONCURRENCY)
        self.workers.append(worker)
        return worker

    def restart_web(self) -> None:
        self.farm.start_web(self.web_port)


@contextlib.contextmanager
def chaos_farm(
    tmp_path: Path,
    *,
    broker_url: str | None,
    database_url: str | None,
    simulator_flags: tuple[str, ...] = (),
    **overrides: Any,
) -> Iterator[ChaosFarm]:
    with Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "logs") as farm:
        latency = ("--latency-dist", "uniform", "--latency-min-s", "0", "--latency-max-s", "0.5")
        pipeline = start_pipeline(
            farm,
            api_key=SIMULATOR_KEY,
            simulator_flags=("--fast-images", "--random-seed", "7", *latency, *simulator_flags),
            worker_name="worker-a",
            concurrency=WORKER_CONCURRENCY,
            broker_url=broker_url,
            database_url=database_url,
            **(CHAOS_SETTINGS | overrides),
        )
        chaos = ChaosFarm(
            farm, pipeline.settings, pipeline.simulator_url, pipeline.web_port, [pipeline.worker]
        )
        farm.supervise()
        yield chaos


@dataclass(frozen=True)
class ChaosResult:
    scenario: str
    jobs: int
    lost: int
    paid_twice: int
    duplicate_results: int
    p99_to_terminal_s: float
    charged_usd: Decimal
    recorded_usd: Decimal
    states: dict[str, int]

    def row(self) -> str:
        return (
            f"| {self.scenario} | {self.jobs} | {self.lost} | {self.paid_twice} | "
            f"{self.duplicate_results} | {self.p99_to_terminal_s:.1f} s |"
        )


def run_scenario(
    scenario: str,
    chaos: ChaosFarm,
    disrupt: Callable[[ChaosFarm], None],
    jobs: int = 200,
    timeout: float = 240,
) -> ChaosResult:
    """Submit `jobs`, disrupt the farm meanwhile, wait for every job, and measure."""
    requests = demo_requests(jobs)
    with FluxfarmClient(chaos.settings, tenant="chaos") as client:
        disruption = threading.Thread(target=disrupt, args=(chaos,), name=scenario)
        disruption.start()
        job_ids = [_submit(client, f"{scenario}-{i}", r) for i, r in enumerate(requests)]
        disruption.join()
        finished = _wait_all(client, job_ids, timeout)
        with client.store.engine.connect() as conn:
            stored_results = conn.execute(select(func.count()).select_from(results)).scalar_one()
    stats = chaos.stats()
    recorded = sum((job.cost_usd for job in finished), Decimal(0))
    durations = sorted(
        (job.finished_at - job.created_at).total_seconds() for job in finished if job.finished_at
    )
    states: dict[str, int] = {}
    for job in finished:
        states[job.state.value] = states.get(job.state.value, 0) + 1
    return ChaosResult(
        scenario=scenario,
        jobs=jobs,
        lost=sum(job.state is not JobState.SUCCEEDED for job in finished),
        # one job is one taskUUID: Runware billing more tasks or images than we asked for
        # is exactly a double payment
        paid_twice=max(0, stats["tasks_accepted"] - jobs)
        + max(0, stats["images_generated"] - sum(job.number_results for job in finished)),
        duplicate_results=max(0, stored_results - stats["images_generated"]),
        p99_to_terminal_s=_p99(durations),
        charged_usd=Decimal(stats["charged_usd_exact"]),
        recorded_usd=recorded,
        states=states,
    )


def _submit(client: FluxfarmClient, key: str, request: dict[str, Any]) -> str:
    """Submit as a careful caller does: a store outage is retried with the same key."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return client.submit(request, idempotency_key=key)
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _wait_all(client: FluxfarmClient, job_ids: list[str], timeout: float) -> list[Job]:
    """Wait as a careful caller does: a store outage while waiting is waited out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.wait_all(job_ids, max(1.0, deadline - time.monotonic()), 0.5)
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _p99(durations: list[float]) -> float:
    if len(durations) < 2:
        return durations[0] if durations else float("nan")
    return statistics.quantiles(durations, n=100)[98]


def worker_children(worker: Child) -> list[int]:
    """The prefork pool processes of a Celery worker (its master's children); none for a
    threads pool."""
    path = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children")
    with contextlib.suppress(FileNotFoundError):
        return [int(pid) for pid in path.read_text().split()]
    return []
