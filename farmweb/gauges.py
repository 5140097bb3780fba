"""Scrape-time gauges that `web` reads from the store and the broker, cached per process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from kombu import Connection
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from farmdomain.broker import SUBMIT_QUEUE, celery_config
from farmdomain.jobs import JobState
from farmdomain.metrics import (
    OTHER_TENANTS,
    PREFIX,
    STATE_CACHE_S,
    TENANT_LABELS_MAX,
    FarmMetrics,
)
from farmdomain.settings import Settings
from jobstore.budgets import BudgetStanding, standings
from jobstore.copies import ResultCopies
from jobstore.schema import jobs, runware_capacity
from jobstore.waiting import waiting_by_tenant

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FarmState:
    """One reading of the store and the broker."""

    jobs_in_state: dict[str, int]
    oldest_queued_age_s: float
    queue_depth: dict[str, int]
    # the oldest result whose image is neither kept nor given up on
    oldest_unstored_age_s: float = 0.0
    # (units held, cap) of each Runware key's admission count, by key digest
    capacity: dict[str, tuple[int, int]] = field(default_factory=dict)
    # seconds left of each key's fleet-wide pause of first claims (Runware's pushback)
    paused_s: dict[str, float] = field(default_factory=dict)
    # every tenant's budgets in their current periods
    budgets: list[BudgetStanding] = field(default_factory=list)
    # jobs waiting for admission, by tenant
    waiting: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Reading:
    """What the gauges show: the last good state (None before the first), its age, and
    whether the latest try failed."""

    state: FarmState | None
    age_s: float
    stale: bool


def read_farm_state(engine: Engine, broker_depth: Callable[[], dict[str, int]]) -> FarmState:
    now = datetime.now(UTC)
    with engine.connect() as conn:
        rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state))
        counts: dict[str, int] = {state: count for state, count in rows}
        oldest = conn.execute(
            select(func.min(jobs.c.created_at)).where(jobs.c.state == JobState.QUEUED.value)
        ).scalar()
        keys = conn.execute(select(runware_capacity)).all()
    unstored = ResultCopies(engine).oldest_not_stored()
    return FarmState(
        jobs_in_state={state.value: int(counts.get(state.value, 0)) for state in JobState},
        oldest_queued_age_s=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        queue_depth=broker_depth(),
        oldest_unstored_age_s=max(0.0, (now - unstored).total_seconds()) if unstored else 0.0,
        capacity={row.key_id: (row.held, row.cap) for row in keys},
        paused_s={row.key_id: _left(row.paused_until, now) for row in keys},
        budgets=standings(engine, now),
        waiting=waiting_by_tenant(engine),
    )


def _left(until: datetime | None, now: datetime) -> float:
    return 0.0 if until is None else max(0.0, (until - now).total_seconds())


def broker_queue_depth(settings: Settings) -> Callable[[], dict[str, int]]:
    """Messages ready in the submit queue, by a passive declare (AMQP, Redis, SQL alike)."""
    url = celery_config(settings)["broker_url"]

    def depth() -> dict[str, int]:
        with Connection(url, connect_timeout=2) as conn:
            channel: Any = conn.default_channel
            try:
                _, count, _ = channel.queue_declare(queue=SUBMIT_QUEUE, passive=True)
            except conn.channel_errors:
                count = 0  # nothing was ever published: the queue does not exist yet
        return {SUBMIT_QUEUE: int(count)}

    return depth


class FarmStateCollector(Collector):
    """Scrape-time gauges from the store and broker, cached so many scrapers cost one read.

    A reading that fails (the store or the broker away) leaves the last good one in place,
    marked stale with its age, and is tried again a cache period later: a scrape during an
    outage still shows every counter of the process.
    """

    def __init__(
        self,
        settings: Settings,
        read: Callable[[], FarmState],
        ttl_s: float = STATE_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._read = read
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._tried_at: float | None = None
        self._failed = False
        self._good: tuple[float, FarmState] | None = None

    def reading(self) -> Reading:
        with self._lock:
            now = self._clock()
            if self._tried_at is None or now - self._tried_at >= self._ttl_s:
                self._tried_at = now
                try:
                    self._good = (now, self._read())
                    self._failed = False
                # whatever stops the reading must not take the process's counters with it
                except Exception as exc:
                    log.warning("metrics.farm_state_unreadable", error=type(exc).__name__)
                    self._failed = True
            if self._good is None:
                return Reading(None, 0.0, self._failed)
            return Reading(self._good[1], now - self._good[0], self._failed)

    def collect(self) -> Iterator[Metric]:
        reading = self.reading()
        yield GaugeMetricFamily(
            f"{PREFIX}_farm_state_stale",
            "1 when the last reading of the store and broker failed: the farm-state gauges"
            " show an older reading, or none.",
            value=int(reading.stale),
        )
        if reading.state is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_farm_state_age_seconds",
                "Age of the reading the farm-state gauges show.",
                value=reading.age_s,
            )
            yield from _state_gauges(reading.state)
        yield GaugeMetricFamily(
            f"{PREFIX}_spend_alert_usd_per_hour",
            "The hourly spend above which the spend alert fires (a setting).",
            value=self._settings.spend_alert_usd_per_hour,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_spend_daily_budget_usd",
            "The daily budget the budget alert compares the last 24 h to (a setting).",
            value=self._settings.spend_daily_budget_usd,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_runware_ttl_seconds",
            "How long Runware keeps an image URL (a setting): the copy alert fires at half.",
            value=self._settings.runware_ttl_s,
        )

    def describe(self) -> Iterator[Metric]:
        # registering must not query the store
        return iter(())


def _state_gauges(state: FarmState) -> Iterator[Metric]:
    in_state = GaugeMetricFamily(
        f"{PREFIX}_jobs_in_state", "Jobs in each state now.", labels=["state"]
    )
    for name, count in state.jobs_in_state.items():
        in_state.add_metric([name], count)
    yield in_state
    yield GaugeMetricFamily(
        f"{PREFIX}_oldest_queued_job_age_seconds",
        "Age of the oldest job still queued; 0 when none is.",
        value=state.oldest_queued_age_s,
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_oldest_unstored_result_age_seconds",
        "Age of the oldest result whose image is not yet kept (nor given up on); 0 when none.",
        value=state.oldest_unstored_age_s,
    )
    depth = GaugeMetricFamily(
        f"{PREFIX}_broker_queue_depth", "Messages ready on the broker.", labels=["queue"]
    )
    for queue, count in state.queue_depth.items():
        depth.add_metric([queue], count)
    yield depth
    held = GaugeMetricFamily(
        f"{PREFIX}_runware_in_flight",
        "Tasks claimed and not yet terminal, counted against each Runware key (store).",
        labels=["key"],
    )
    cap = GaugeMetricFamily(
        f"{PREFIX}_runware_in_flight_cap",
        "The fleet's cap of each Runware key (FLUXFARM_RUNWARE_MAX_IN_FLIGHT); 0: uncapped.",
        labels=["key"],
    )
    paused = GaugeMetricFamily(
        f"{PREFIX}_runware_paused_seconds",
        "Seconds left of the fleet's pause of new claims on each Runware key, set by a"
        " 429/503/504 or Retry-After; 0: not paused.",
        labels=["key"],
    )
    for key, (units, most) in state.capacity.items():
        # a key's digest, never the key; its first characters tell keys apart
        held.add_metric([key[:8]], units)
        cap.add_metric([key[:8]], most)
        paused.add_metric([key[:8]], state.paused_s.get(key, 0.0))
    yield held
    yield cap
    yield paused
    yield from _budget_gauges(state.budgets)
    yield _waiting_gauge(state.waiting)


def _budget_gauges(found: list[BudgetStanding]) -> Iterator[Metric]:
    labels = ["tenant", "period"]
    used = GaugeMetricFamily(
        f"{PREFIX}_tenant_budget_used_ratio",
        "Fraction of each tenant's budget its jobs of the period have used or hold reserved;"
        " 1 or more: no job fits.",
        labels=labels,
    )
    soft = GaugeMetricFamily(
        f"{PREFIX}_tenant_budget_soft_ratio",
        "The used fraction past which each tenant's budget warns (fluxfarm tenants budget --soft).",
        labels=labels,
    )
    remaining = GaugeMetricFamily(
        f"{PREFIX}_tenant_budget_remaining_usd",
        "What is left of each tenant's budget in its period, after use and reservations.",
        labels=labels,
    )
    for standing in found:
        key = [standing.tenant, standing.period.value]
        committed = standing.limit_usd - standing.remaining_usd
        # a budget of 0 is at its end from the start
        ratio = float(committed / standing.limit_usd) if standing.limit_usd else 1.0
        used.add_metric(key, ratio)
        soft.add_metric(key, standing.soft_fraction)
        remaining.add_metric(key, float(standing.remaining_usd))
    yield used
    yield soft
    yield remaining


def _waiting_gauge(waiting: dict[str, int]) -> Metric:
    """Jobs waiting per tenant: the TENANT_LABELS_MAX tenants with most waiting by name,
    the rest together as OTHER_TENANTS."""
    gauge = GaugeMetricFamily(
        f"{PREFIX}_tenant_jobs_waiting",
        "Jobs of each tenant waiting for admission (queued, never claimed).",
        labels=["tenant"],
    )
    ranked = sorted(waiting.items(), key=lambda item: (-item[1], item[0]))
    for tenant, count in ranked[:TENANT_LABELS_MAX]:
        gauge.add_metric([tenant], count)
    rest = sum(count for _, count in ranked[TENANT_LABELS_MAX:])
    if rest:
        gauge.add_metric([OTHER_TENANTS], rest)
    return gauge


def exported_metric_names() -> set[str]:
    """Every series name /metrics can show, with the _bucket/_sum/_count/_total forms."""
    registry = CollectorRegistry()
    FarmMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.add(family.name)
    state = FarmStateCollector(
        Settings(), lambda: FarmState({s.value: 0 for s in JobState}, 0.0, {SUBMIT_QUEUE: 0})
    )
    names.update(family.name for family in state.collect())
    return names
