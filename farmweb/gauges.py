"""Scrape-time gauges that `web` reads from the store and the broker, cached per process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kombu import Connection
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from farmdomain.broker import SUBMIT_QUEUE, celery_config
from farmdomain.jobs import JobState
from farmdomain.metrics import PREFIX, STATE_CACHE_S, FarmMetrics
from farmdomain.settings import Settings
from jobstore.schema import jobs


@dataclass(frozen=True)
class FarmState:
    """One reading of the store and the broker."""

    jobs_in_state: dict[str, int]
    oldest_queued_age_s: float
    queue_depth: dict[str, int]


def read_farm_state(engine: Engine, broker_depth: Callable[[], dict[str, int]]) -> FarmState:
    now = datetime.now(UTC)
    with engine.connect() as conn:
        rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state))
        counts: dict[str, int] = {state: count for state, count in rows}
        oldest = conn.execute(
            select(func.min(jobs.c.created_at)).where(jobs.c.state == JobState.QUEUED.value)
        ).scalar()
    return FarmState(
        jobs_in_state={state.value: int(counts.get(state.value, 0)) for state in JobState},
        oldest_queued_age_s=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        queue_depth=broker_depth(),
    )


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
    """Scrape-time gauges from the store and broker, cached so many scrapers cost one read."""

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
        self._cached: tuple[float, FarmState] | None = None

    def state(self) -> FarmState:
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._cached[0] >= self._ttl_s:
                self._cached = (now, self._read())
            return self._cached[1]

    def collect(self) -> Iterator[Metric]:
        state = self.state()
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
        depth = GaugeMetricFamily(
            f"{PREFIX}_broker_queue_depth", "Messages ready on the broker.", labels=["queue"]
        )
        for queue, count in state.queue_depth.items():
            depth.add_metric([queue], count)
        yield depth
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

    def describe(self) -> Iterator[Metric]:
        # registering must not query the store
        return iter(())


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
