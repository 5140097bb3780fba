"""Every Prometheus metric of fluxfarm, declared once, and how a process exposes them.

Recorded metrics live in prometheus_client's multiprocess mode when FLUXFARM_METRICS_DIR
is set: each process of a group (a Celery worker and its prefork children, or uvicorn's
workers) writes its own files there and any one of them serves the group's sum. One
directory belongs to one process group, is wiped by whatever starts the group, and is
scraped through that group's endpoint only, so a Prometheus `sum()` over targets counts
every event once. Gauges read from the store and the broker are computed at scrape time
by `FarmStateCollector` and are exposed by `web` only.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from functools import cache

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from farmdomain.settings import Settings

PREFIX = "fluxfarm"
# 5 ms (a webhook) to 15 min (the default job deadline)
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
)  # fmt: skip
COST_BUCKETS = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
STATE_CACHE_S = 5.0
# Tenants are the operator's (each API token names one), so a tenant label stays few-valued;
# as a guard against a farm of many, a process labels this many and counts the rest as one
TENANT_LABELS_MAX = 100
OTHER_TENANTS = "_other"


class TenantLabels:
    """The tenant label of a series: the tenant's name for the first TENANT_LABELS_MAX a
    process sees, OTHER_TENANTS past them."""

    def __init__(self, most: int = TENANT_LABELS_MAX) -> None:
        self._most = most
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, tenant: str) -> str:
        with self._lock:
            if tenant in self._seen:
                return tenant
            if len(self._seen) < self._most:
                self._seen.add(tenant)
                return tenant
        return OTHER_TENANTS


class FarmMetrics:
    """The recorded metrics; `registry=None` leaves them to the multiprocess files."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        def counter(name: str, doc: str, labels: Iterable[str]) -> Counter:
            return Counter(name, doc, labels, namespace=PREFIX, registry=registry)

        def histogram(
            name: str,
            doc: str,
            labels: Iterable[str] = (),
            buckets: Sequence[float] = LATENCY_BUCKETS,
        ) -> Histogram:
            return Histogram(
                name, doc, labels, namespace=PREFIX, registry=registry, buckets=buckets
            )

        self.jobs_submitted = counter(
            "jobs_submitted_total", "Jobs a worker claimed for the first time.", ["model"]
        )
        self.jobs_finished = counter(
            "jobs_finished_total", "Jobs that reached a terminal state.", ["model", "status"]
        )
        self.job_failures = counter(
            "job_failures_total", "Failed or canceled jobs by reason.", ["model", "reason"]
        )
        self.spend = counter(
            "spend_usd_total", "Runware's reported cost, once per distinct result.", ["model"]
        )
        self.unconfirmed_spend = counter(
            "unconfirmed_spend_usd_total",
            "Costs webhooks reported above the cost factor times the job's estimate: kept"
            " apart, counted in no spend figure.",
            ["model"],
        )
        self.results_recorded = counter(
            "results_recorded_total", "Distinct results stored, by how they came.", ["source"]
        )
        self.webhooks_received = counter(
            "webhooks_received_total", "Webhook deliveries by what they did.", ["outcome"]
        )
        self.requests_rejected = counter(
            "requests_rejected_total",
            "Requests refused for credentials or a limit, by surface (api, webhook) and reason.",
            ["surface", "reason"],
        )
        self.provider_requests = counter(
            "provider_requests_total", "POSTs to Runware by HTTP status or error.", ["status"]
        )
        self.submit_retries = counter(
            "submit_retries_total", "Submissions retried after a transient error.", ["reason"]
        )
        self.images_stored = counter(
            "images_stored_total", "Result images written to the results store.", ["store"]
        )
        self.image_bytes_stored = counter(
            "image_bytes_stored_total", "Bytes of result images written.", ["store"]
        )
        self.image_copy_failures = counter(
            "image_copy_failures_total", "Failed copies of a result image, by reason.", ["reason"]
        )
        self.image_copy = histogram(
            "image_copy_seconds", "Fetching, checking and writing one result image.", ["store"]
        )
        self.callback_attempts = counter(
            "callback_attempts_total",
            "Callback delivery attempts by outcome: delivered, gone (410), rejected (another"
            " status), unanswered (no answer: refused, timeout, connection).",
            ["outcome"],
        )
        self.callbacks_dead = counter(
            "callbacks_dead_total", "Callbacks given up on after the last attempt.", []
        )
        self.callback_delivery = histogram(
            "callback_delivery_seconds", "A job's terminal transition to its callback delivered."
        )
        self.queue_wait = histogram(
            "job_queue_wait_seconds",
            "Created to first claimed: the wait for a worker and for admission under the cap.",
            ["model"],
        )
        self.tenant_admissions = counter(
            "tenant_admissions_total",
            "First claims (admissions under the cap) by tenant; past TENANT_LABELS_MAX"
            " tenants a process counts the rest as _other.",
            ["tenant"],
        )
        self.tenant_label = TenantLabels()
        self.provider_submit = histogram(
            "provider_submit_seconds", "One imageInference POST to Runware.", ["model"]
        )
        self.provider_generation = histogram(
            "provider_generation_seconds", "Runware's acknowledgement to the last image.", ["model"]
        )
        self.webhook_handling = histogram(
            "webhook_handling_seconds", "Receiving, checking and recording one webhook."
        )
        self.job_duration = histogram(
            "job_duration_seconds", "Created to terminal.", ["model", "status"]
        )
        self.job_cost = histogram(
            "job_cost_usd", "A finished job's cost.", ["model"], buckets=COST_BUCKETS
        )


def configure(settings: Settings) -> None:
    """Put this process in multiprocess mode if the settings name a directory.

    Call before the first `metrics()`: values created earlier stay in process memory.
    """
    if settings.metrics_dir is None:
        return
    settings.metrics_dir.mkdir(parents=True, exist_ok=True)
    # prometheus_client finds its directory in the environment only, in every child too
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.metrics_dir.resolve())
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def start_group(settings: Settings) -> None:
    """Empty and use the group's directory; called once by the process that forks the rest
    (`fluxfarm web`, a `celery worker`'s main process), since files of an earlier run
    would be summed into this one's counters."""
    if settings.metrics_dir is not None:
        shutil.rmtree(settings.metrics_dir, ignore_errors=True)
    configure(settings)


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


@cache
def _local_registry() -> CollectorRegistry:
    return CollectorRegistry()


@cache
def metrics() -> FarmMetrics:
    """This process's metrics, created on first use (after `configure`)."""
    return FarmMetrics(None if _multiprocess_dir() else _local_registry())


def exposition_registry(*extra: Collector) -> CollectorRegistry:
    """What a /metrics endpoint serves: the group's recorded metrics plus `extra`."""
    metrics()
    path = _multiprocess_dir()
    registry = CollectorRegistry()
    if path:
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ProxyCollector(_local_registry()))
    for collector in extra:
        registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def process_exited(pid: int) -> None:
    """Drop a dead process's live-gauge files; its counters stay in the group's sum."""
    path = _multiprocess_dir()
    if path:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


class _ProxyCollector(Collector):
    """Lets one registry's metrics appear in another's exposition."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
