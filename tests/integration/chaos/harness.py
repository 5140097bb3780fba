"""A farm of real processes under a disruption, and the figures that say whether it held."""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.exc import DBAPIError

from farmdomain.errors import StoreUnavailable
from farmdomain.jobs import Job, JobState
from farmdomain.settings import Settings
from fluxfarm.demo import demo_requests
from fluxfarm.processes import Child, Farm, start_pipeline
from jobstore.schema import results
from producers.client import FluxfarmClient
from tests.metrics.prometheus_server import (
    RULES,
    Prometheus,
    compressed_rules,
    rule_windows,
    running_prometheus,
)

SIMULATOR_KEY = "chaos-key"
WORKER_CONCURRENCY = 3
# the scrape jobs ops/prometheus/alerts.yml expects
WEB_JOB = "fluxfarm-web"
WORKER_JOB = "fluxfarm-worker"

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
    # a run spends at hundreds of dollars an hour for a minute: the spend alerts are not
    # what a fault here should raise
    "spend_alert_usd_per_hour": 1_000_000,
}

# The alert rules as Prometheus evaluates them here: every window a 120th of its own (30
# minutes become 15 s), none under 10 s, two readings of the farm-state gauges (cached
# 5 s by web). Thresholds are the rules' own.
ALERT_RULES = compressed_rules(RULES.read_text(), factor=120, floor_s=10)
ALERT_WINDOWS_S = rule_windows(ALERT_RULES)
# what an alert may take beyond its window: the fault's effect reaching a metric (polling
# after 4 s, the gauges' cache), a scrape, an evaluation, a loaded machine
ALERT_LAG_S = 20


# jobs between states: a fault that lands while some are here meets work in flight
IN_FLIGHT = ("queued", "submitting", "submitted")


@dataclass(frozen=True)
class Landing:
    """A fault as it landed: what it was, and the jobs by state just before."""

    fault: str
    states: dict[str, int]

    @property
    def in_flight(self) -> int:
        return sum(self.states.get(state, 0) for state in IN_FLIGHT)


@dataclass
class ChaosFarm:
    farm: Farm
    settings: Settings
    simulator_url: str
    web_port: int
    workers: list[Child] = field(default_factory=list)
    landings: list[Landing] = field(default_factory=list)
    # producer calls the store refused (StoreUnavailable), retried with the same key
    refusals: int = 0
    # scraping every web and worker and evaluating ALERT_RULES
    prometheus: Prometheus | None = None
    # where the webs listen, on web_port each
    web_addresses: tuple[str, ...] = ("127.0.0.1",)
    _engine: Engine | None = None

    def set_faults(self, **faults: Any) -> None:
        response = httpx.post(f"{self.simulator_url}/_sim/faults", json=faults, timeout=10)
        response.raise_for_status()

    def reset_faults(self) -> None:
        httpx.delete(f"{self.simulator_url}/_sim/faults", timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.simulator_url}/_sim/stats", timeout=10).json()
        return stats

    def start_worker(self, name: str, app: str = "worker.app") -> Child:
        worker = self.farm.start_worker(name, concurrency=WORKER_CONCURRENCY, app=app)
        self.workers.append(worker)
        if self.prometheus is not None:
            self.prometheus.set_targets(WORKER_JOB, [str(w.metrics_url) for w in self.workers])
        return worker

    def scrape_targets(self) -> dict[str, list[str]]:
        """The metrics URLs of the web and of every worker started, by scrape job."""
        return {
            WEB_JOB: [
                f"http://{address}:{self.web_port}/metrics" for address in self.web_addresses
            ],
            WORKER_JOB: [str(w.metrics_url) for w in self.workers],
        }

    def alert_fires(self, alert: str) -> None:
        """Wait until `alert` fires, within its (compressed) window."""
        self._await_alert(alert, lambda active: active.get(alert) == "firing", "firing")

    def alert_resolves(self, alert: str) -> None:
        """Wait until `alert` is neither firing nor pending, within its window."""
        self._await_alert(alert, lambda active: alert not in active, "resolved")

    def _await_alert(self, alert: str, done: Callable[[dict[str, str]], bool], what: str) -> None:
        prometheus = self.prometheus
        assert prometheus is not None, "this farm is not scraped"
        self.until(
            f"{alert} {what}",
            lambda: done(prometheus.active_alerts()),
            timeout=ALERT_WINDOWS_S[alert] + ALERT_LAG_S,
        )

    def restart_web(self) -> None:
        self.farm.start_web(self.web_port)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.settings.resolved_database_url(), pool_pre_ping=True)
        return self._engine

    def states(self) -> dict[str, int] | None:
        """Jobs by state as the store has them now; None while the store is unreachable."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text("SELECT state, count(*) FROM jobs GROUP BY state"))
                return {state: count for state, count in rows}
        except DBAPIError:
            return None

    def when(
        self, what: str, condition: Callable[[dict[str, int]], bool], timeout: float = 120
    ) -> None:
        """Wait until the store's jobs by state meet `condition`: faults are triggered on
        what the farm is doing, never after a sleep."""

        def met() -> bool:
            states = self.states()
            return states is not None and condition(states)

        self.until(what, met, timeout)

    def until(self, what: str, check: Callable[[], bool], timeout: float = 120) -> None:
        """Wait until `check()` holds; fails the test if it never does."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"never observed: {what} (jobs: {self.states()})")
            time.sleep(0.02)

    def land(self, fault: str, action: Callable[[], object]) -> Landing:
        """Do `action` (the fault), recording the jobs in flight as it lands."""
        landing = Landing(fault, self.states() or {})
        action()
        self.landings.append(landing)
        return landing

    def evidence(self) -> Evidence:
        """What the recovery paths did, as the store's events and results tell it."""
        with self.engine.connect() as conn:
            events = conn.execute(
                text(
                    "SELECT job_id, kind, detail FROM events"
                    " WHERE kind IN ('resubmitted', 'republished', 'retry_scheduled')"
                )
            ).all()
            polled = conn.execute(
                text("SELECT count(*) FROM results WHERE source = 'poll'")
            ).scalar_one()
        by_kind: dict[str, set[str]] = {}
        for job_id, kind, detail in events:
            plain = json.loads(detail) if isinstance(detail, str) else detail
            key = f"retry:{plain.get('reason')}" if kind == "retry_scheduled" else kind
            by_kind.setdefault(key, set()).add(job_id)
        return Evidence({kind: len(ids) for kind, ids in by_kind.items()}, polled)

    def provider_requests(self, status: str) -> int:
        """POSTs to Runware the live workers counted with `status` (an HTTP code, `timeout`)."""
        total = 0.0
        for worker in self.workers:
            if worker.metrics_url is None or worker.process.poll() is not None:
                continue
            exposition = httpx.get(worker.metrics_url, timeout=10).text
            for family in text_string_to_metric_families(exposition):
                total += sum(
                    sample.value
                    for sample in family.samples
                    if sample.name == "fluxfarm_provider_requests_total"
                    and sample.labels.get("status") == status
                )
        return int(total)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


@dataclass(frozen=True)
class Evidence:
    """Distinct jobs each recovery path touched (`resubmitted`, `republished`,
    `retry:<reason>`), and the results that came by polling instead of a webhook."""

    jobs: dict[str, int]
    polled_results: int

    def __getitem__(self, kind: str) -> int:
        return self.jobs.get(kind, 0)


@contextlib.contextmanager
def chaos_farm(
    tmp_path: Path,
    *,
    broker_url: str | None,
    database_url: str | None,
    simulator_flags: tuple[str, ...] = (),
    worker_app: str = "worker.app",
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
        chaos = ChaosFarm(farm, pipeline.settings, pipeline.simulator_url, pipeline.web_port)
        if worker_app == "worker.app":
            chaos.workers.append(pipeline.worker)
        else:
            # the pipeline's own worker makes way before any job exists
            farm.kill(pipeline.worker)
            chaos.start_worker("worker-a", worker_app)
        farm.supervise()
        try:
            with running_prometheus(
                tmp_path / "prometheus", chaos.scrape_targets(), rules=ALERT_RULES
            ) as chaos.prometheus:
                yield chaos
        finally:
            chaos.close()


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
    landings: list[Landing]
    evidence: Evidence
    # the alerts that fired during the run; None when no Prometheus scraped the farm
    alerts: list[str] | None = None

    def row(self, hit: str) -> str:
        return (
            f"| {self.scenario} | {self.jobs} | {hit} | {self.lost} | {self.paid_twice} | "
            f"{self.duplicate_results} | {self.p99_to_terminal_s:.1f} s | {self.alerts_cell} |"
        )

    @property
    def alerts_cell(self) -> str:
        """The table's last column: the alerts that fired."""
        if self.alerts is None:
            return "not scraped"
        return ", ".join(f"`{alert}`" for alert in self.alerts) or "none"


def run_scenario(
    scenario: str,
    chaos: ChaosFarm,
    disrupt: Callable[[ChaosFarm], None],
    jobs: int = 200,
    timeout: float = 240,
    submit_per_s: float | None = None,
    submit: Callable[[str, dict[str, Any]], str] | None = None,
    requests: Sequence[dict[str, Any]] | None = None,
) -> ChaosResult:
    """Submit `jobs` of the demo's mix, or `requests` (at `submit_per_s`, or as fast as
    the store takes them), disrupt the farm meanwhile, wait for every job, and measure.
    `submit(key, request)` submits one job another way (over HTTP, say) and returns its
    id; by default the producer client commits it to the store itself."""
    requests = demo_requests(jobs) if requests is None else requests
    jobs = len(requests)
    failures: list[BaseException] = []

    def disruption() -> None:
        try:
            disrupt(chaos)
        except BaseException as exc:
            failures.append(exc)

    with FluxfarmClient(chaos.settings, tenant="chaos") as client:
        thread = threading.Thread(target=disruption, name=scenario)
        thread.start()
        job_ids = []
        started = time.monotonic()
        for i, request in enumerate(requests):
            key = f"{scenario}-{i}"
            job_ids.append(submit(key, request) if submit else _submit(chaos, client, key, request))
            if submit_per_s:
                # on a schedule, so that the rate holds whatever a submit takes
                time.sleep(max(0.0, started + (i + 1) / submit_per_s - time.monotonic()))
        thread.join()
        if failures:
            raise failures[0]
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
        landings=list(chaos.landings),
        evidence=chaos.evidence(),
        alerts=chaos.prometheus.raised() if chaos.prometheus is not None else None,
    )


def _submit(chaos: ChaosFarm, client: FluxfarmClient, key: str, request: dict[str, Any]) -> str:
    """Submit as a careful caller does: a store outage is retried with the same key."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return client.submit(request, idempotency_key=key)
        except StoreUnavailable:
            chaos.refusals += 1
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
