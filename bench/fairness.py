"""The fairness run: one tenant's backlog of thousands, another tenant's jobs queued behind
it, then weights 3:1 under a shared backlog; every figure from the timestamps the store
recorded (created_at, claimed_at). `fluxfarm bench --fairness` runs the issue's 10,000;
tests/integration/test_fairness.py runs it smaller and asserts on the same figures.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from bench.farms import bench_farm, start_capped
from farmdomain.settings import Settings
from fluxfarm.processes import Farm
from jobstore.schema import jobs
from jobstore.store import JobStore
from jobstore.tenant_shares import TenantShares
from producers.client import FluxfarmClient

SIMULATOR_KEY = "fairness-key"
REQUEST = {"positivePrompt": "a lantern in the fog", "width": 512, "height": 512}
WEIGHT = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fairness-backlog", type=int, default=10_000, help="alpha's backlog")
    parser.add_argument(
        "--fairness-cap", type=int, default=20, help="FLUXFARM_RUNWARE_MAX_IN_FLIGHT"
    )
    parser.add_argument("--fairness-latency-s", type=float, default=0.2, help="one generation")


@dataclass(frozen=True)
class Scenario:
    """How big the run is."""

    backlog: int
    cap: int
    # bravo's jobs behind alpha's backlog, then its jobs once alpha weighs WEIGHT
    bravo_first: int = 100
    bravo_weighted: int = 400
    timeout_s: float = 600.0

    @property
    def settling(self) -> int:
        """Admissions left out at the start of the weighted window: the units move to
        WEIGHT:1 as alpha's jobs finish."""
        return 2 * self.cap


@dataclass(frozen=True)
class Figures:
    """What the run measured."""

    # bravo's queue waits (created -> submitting) behind alpha's backlog
    bravo_p50_s: float
    bravo_p95_s: float
    # alpha's jobs created before bravo's first, and how many of them were still waiting
    # when bravo's last was admitted
    alpha_before: int
    alpha_waiting_after: int
    # alpha's jobs created before bravo's first and admitted by then: their waits
    alpha_p95_s: float
    # admissions per tenant in the window where both waited under WEIGHT:1
    window: dict[str, int]
    # whether alpha still had jobs waiting when bravo's weighted batch ran out
    alpha_outlasted: bool

    @property
    def ratio(self) -> float:
        return self.window["alpha"] / max(self.window["bravo"], 1)


@dataclass(frozen=True)
class _Row:
    tenant: str
    created_at: datetime
    claimed_at: datetime | None

    @property
    def wait_s(self) -> float:
        assert self.claimed_at is not None
        return (self.claimed_at - self.created_at).total_seconds()


def farm_settings(farm: Farm, cap: int, latency_s: float, **overrides: object) -> Settings:
    """Simulator, web, beat and two workers (threads and prefork pools) under `cap`."""
    pipeline = start_capped(
        farm, SIMULATOR_KEY, cap, latency_s, admission_tenants_cache_s=0.5, **overrides
    )
    farm.start_worker("worker-b", concurrency=4, pool="prefork")
    return pipeline.settings


def measure(settings: Settings, scenario: Scenario) -> Figures:
    """Run the scenario on a started farm whose store has no job yet."""
    store = JobStore.from_settings(settings)
    try:
        return _measure(settings, store, scenario)
    finally:
        store.engine.dispose()


def _measure(settings: Settings, store: JobStore, scenario: Scenario) -> Figures:
    alpha = _queue(settings, "alpha", scenario.backlog)
    _wait_for(scenario, "alpha under way", lambda: _claimed(store, alpha) >= 5 * scenario.cap)
    bravo = _queue(settings, "bravo", scenario.bravo_first)
    _wait_for(scenario, "bravo admitted", lambda: _claimed(store, bravo) == len(bravo))

    bravo_rows = _rows(store, bravo)
    bravo_queued = min(row.created_at for row in bravo_rows)
    bravo_done = max(row.claimed_at for row in bravo_rows if row.claimed_at)
    before = [row for row in _rows(store, alpha) if row.created_at < bravo_queued]
    waiting_after = [row for row in before if row.claimed_at is None or row.claimed_at > bravo_done]
    bravo_waits = [row.wait_s for row in bravo_rows]
    alpha_waits = [row.wait_s for row in before if row.claimed_at and row.claimed_at <= bravo_done]

    TenantShares(store.engine).set_weight("alpha", WEIGHT)
    weighted = _queue(settings, "bravo", scenario.bravo_weighted)
    _wait_for(
        scenario, "bravo's weighted batch", lambda: _claimed(store, weighted) == len(weighted)
    )
    window = _window(_rows(store), _rows(store, weighted), scenario.settling)
    return Figures(
        bravo_p50_s=_percentile(bravo_waits, 0.5),
        bravo_p95_s=_percentile(bravo_waits, 0.95),
        alpha_before=len(before),
        alpha_waiting_after=len(waiting_after),
        alpha_p95_s=_percentile(alpha_waits, 0.95),
        window=window,
        alpha_outlasted=_claimed(store, alpha) < len(alpha),
    )


def _queue(settings: Settings, tenant: str, count: int) -> list[str]:
    size = settings.submit_many_max
    with FluxfarmClient(settings, tenant=tenant) as client:
        return [
            job_id
            for start in range(0, count, size)
            for job_id in client.submit_many([REQUEST] * min(size, count - start))
        ]


def _rows(store: JobStore, job_ids: list[str] | None = None) -> list[_Row]:
    query = select(jobs.c.id, jobs.c.tenant, jobs.c.created_at, jobs.c.claimed_at)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    wanted = None if job_ids is None else set(job_ids)
    return [
        _Row(row.tenant, row.created_at, row.claimed_at)
        for row in rows
        if wanted is None or row.id in wanted
    ]


def _claimed(store: JobStore, job_ids: list[str]) -> int:
    return sum(row.claimed_at is not None for row in _rows(store, job_ids))


def _wait_for(scenario: Scenario, what: str, condition: Callable[[], bool]) -> None:
    until = time.monotonic() + scenario.timeout_s
    while not condition():
        if time.monotonic() > until:
            raise TimeoutError(f"{what}: not within {scenario.timeout_s:g} s")
        time.sleep(0.2)


def _percentile(values: list[float], share: float) -> float:
    return sorted(values)[int(share * (len(values) - 1))] if values else 0.0


def _window(everyone: list[_Row], weighted: list[_Row], settling: int) -> dict[str, int]:
    """Admissions per tenant while both had jobs waiting under WEIGHT:1: from once the
    weighted batch was all queued, `settling` admissions on, to bravo's last admission."""
    start = max(row.created_at for row in weighted)
    end = max(row.claimed_at for row in weighted if row.claimed_at)
    admitted = sorted(
        (row for row in everyone if row.claimed_at and start < row.claimed_at <= end),
        key=lambda row: row.claimed_at or start,
    )[settling:]
    counts = {"alpha": 0, "bravo": 0}
    for row in admitted:
        counts[row.tenant] += 1
    return counts


@contextmanager
def _bench_farm(args: argparse.Namespace) -> Iterator[Settings]:
    data_dir = (Path(args.work_dir) / "fairness").resolve()
    with ExitStack() as stack:
        made = bench_farm(stack, data_dir, args.postgres_url)
        farm, redis, database_url = made.farm, made.redis, made.database_url
        yield farm_settings(
            farm,
            args.fairness_cap,
            args.fairness_latency_s,
            broker_url=redis.url,
            database_url=database_url,
            job_deadline_s=7200,
        )


def run(args: argparse.Namespace) -> int:
    scenario = Scenario(args.fairness_backlog, args.fairness_cap, timeout_s=args.timeout)
    with _bench_farm(args) as settings:
        figures = measure(settings, scenario)
    print(table(figures, scenario, args.fairness_latency_s))
    return 0


def table(figures: Figures, scenario: Scenario, latency_s: float) -> str:
    return "\n".join(
        [
            f"Fairness: cap {scenario.cap}, {latency_s:g} s per image, two workers (threads 8,"
            f" prefork 4), Redis + PostgreSQL; alpha queues {scenario.backlog:,} jobs, then"
            f" bravo {scenario.bravo_first}; then alpha weighs {WEIGHT:g} and bravo queues"
            f" {scenario.bravo_weighted} more.",
            "",
            "| bravo p50 wait | bravo p95 wait | alpha's earlier jobs still waiting after"
            " bravo's last | alpha p95 wait so far | window alpha:bravo | ratio (target 3 ± 5 %) |",
            "|---|---|---|---|---|---|",
            f"| {figures.bravo_p50_s:.2f} s | {figures.bravo_p95_s:.2f} s |"
            f" {figures.alpha_waiting_after:,} of {figures.alpha_before:,} |"
            f" {figures.alpha_p95_s:.1f} s | {figures.window['alpha']}:{figures.window['bravo']} |"
            f" {figures.ratio:.3f} |",
        ]
    )
