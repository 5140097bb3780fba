"""The store observer, the scrape-time collector and the spend report, on a real SQLite store."""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.typing import EventDict

from farmdomain.jobs import FailureReason, JobState
from farmdomain.metrics import OTHER_TENANTS, FarmMetrics, TenantLabels
from farmdomain.settings import Settings
from farmdomain.values import Failure, IncomingResult
from farmweb import gauges
from farmweb.gauges import FarmState, FarmStateCollector, read_farm_state
from jobstore import spend
from jobstore.migrations import upgrade
from jobstore.observer import MetricsObserver
from jobstore.store import JobStore
from producers import spend_cli
from tests.jobstore.conftest import keep_images

MODEL = {"model": "bfl:5@1"}
REQUEST = {"positivePrompt": "a kiln at dusk", "width": 512, "height": 512}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def store(tmp_path: Path, registry: CollectorRegistry) -> JobStore:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore.from_url(url)
    store.observers.append(MetricsObserver(FarmMetrics(registry)))
    return store


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def result(task_uuid: str, image_uuid: str, cost: str) -> IncomingResult:
    return IncomingResult(task_uuid, image_uuid, "https://im/x.jpg", None, 1, Decimal(cost), False)


def test_a_job_through_every_stage_is_counted_once_per_stage(
    store: JobStore, registry: CollectorRegistry
) -> None:
    job, _ = store.create_job(REQUEST, tenant="t", deadline_s=600)
    assert store.claim(job.id, 0) is not None
    store.mark_submitted(job.id, {})
    store.record_result(result(job.task_uuid, "img-1", "0.0123"), "webhook")
    keep_images(store, job.id)
    assert value(registry, "fluxfarm_jobs_submitted_total", **MODEL) == 1
    assert value(registry, "fluxfarm_job_queue_wait_seconds_count", **MODEL) == 1
    finished = {**MODEL, "status": "succeeded"}
    assert value(registry, "fluxfarm_jobs_finished_total", **finished) == 1
    assert value(registry, "fluxfarm_job_duration_seconds_count", **finished) == 1
    assert value(registry, "fluxfarm_provider_generation_seconds_count", **MODEL) == 1
    assert value(registry, "fluxfarm_job_cost_usd_sum", **MODEL) == pytest.approx(0.0123)
    assert value(registry, "fluxfarm_results_recorded_total", source="webhook") == 1
    assert value(registry, "fluxfarm_tenant_admissions_total", tenant="t") == 1


def test_spend_counts_each_distinct_result_once_and_late_results_too(
    store: JobStore, registry: CollectorRegistry
) -> None:
    job, _ = store.create_job({**REQUEST, "numberResults": 2}, tenant="t", deadline_s=600)
    store.claim(job.id, 0)
    store.mark_submitted(job.id, {})
    store.record_result(result(job.task_uuid, "img-1", "0.01"), "webhook")
    store.record_result(result(job.task_uuid, "img-1", "0.01"), "webhook")  # duplicate
    store.cancel(job.id)
    store.record_result(result(job.task_uuid, "img-2", "0.02"), "poll")  # late, still billed
    assert value(registry, "fluxfarm_spend_usd_total", **MODEL) == pytest.approx(0.03)
    assert value(registry, "fluxfarm_job_failures_total", **MODEL, reason="canceled") == 1
    report = spend.spend_report(store.engine)
    assert report.total_usd == Decimal("0.03")
    assert [day.results for day in report.days] == [2]


def test_a_failure_is_counted_by_its_reason(store: JobStore, registry: CollectorRegistry) -> None:
    job, _ = store.create_job(REQUEST, tenant="t", deadline_s=600)
    store.claim(job.id, 0)
    store.fail(job.id, Failure(FailureReason.SAFETY, "blocked"))
    store.fail(job.id, Failure(FailureReason.SAFETY, "blocked"))  # no second transition
    assert value(registry, "fluxfarm_job_failures_total", **MODEL, reason="safety") == 1
    failed = {**MODEL, "status": "failed"}
    assert value(registry, "fluxfarm_jobs_finished_total", **failed) == 1


def test_each_transition_logs_one_canonical_line_with_ids_and_duration(
    store: JobStore, logs: list[EventDict]
) -> None:
    job, _ = store.create_job(REQUEST, tenant="t", deadline_s=600)
    store.claim(job.id, 0)
    store.mark_submitted(job.id, {})
    lines = [line for line in logs if line["event"] == "job.transition"]
    assert [line["status"] for line in lines] == ["queued", "submitting", "submitted"]
    for line in lines:
        assert line["job_id"] == job.id
        assert line["task_uuid"] == job.task_uuid
        assert isinstance(line["duration_ms"], float)


def test_spend_report_is_per_tenant_when_asked(store: JobStore) -> None:
    for tenant, cost in (("a", "0.5"), ("b", "0.25")):
        job, _ = store.create_job(REQUEST, tenant=tenant, deadline_s=600)
        store.claim(job.id, 0)
        store.record_result(result(job.task_uuid, f"img-{tenant}", cost), "webhook")
    assert spend.spend_report(store.engine).total_usd == Decimal("0.75")
    assert spend.spend_report(store.engine, tenant="b").total_usd == Decimal("0.25")


def test_spend_command_prints_the_store_total(
    store: JobStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    job, _ = store.create_job(REQUEST, tenant="t", deadline_s=600)
    store.claim(job.id, 0)
    store.record_result(result(job.task_uuid, "img-1", "0.045"), "webhook")
    monkeypatch.setenv("FLUXFARM_DATA_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    spend_cli.add_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["spend", "--json"])
    assert args.handler(args) == 0
    assert '"totalUsd": "0.045"' in capsys.readouterr().out


def test_scrape_time_state_is_read_once_per_cache_period() -> None:
    reads = []
    now = [0.0]

    def read() -> FarmState:
        reads.append(now[0])
        return FarmState({s.value: 1 for s in JobState}, 12.5, {"fluxfarm.submit": 3})

    collector = FarmStateCollector(Settings(), read, ttl_s=5, clock=lambda: now[0])
    registry = CollectorRegistry()
    registry.register(collector)
    for at in (0.0, 1.0, 4.9, 5.0):
        now[0] = at
        assert (
            registry.get_sample_value("fluxfarm_broker_queue_depth", {"queue": "fluxfarm.submit"})
            == 3
        )
    assert reads == [0.0, 5.0]
    assert registry.get_sample_value("fluxfarm_oldest_queued_job_age_seconds") == 12.5
    assert registry.get_sample_value("fluxfarm_jobs_in_state", {"state": "queued"}) == 1


def test_tenant_labels_stop_at_their_limit_and_count_the_rest_as_other() -> None:
    labels = TenantLabels(most=2)
    assert [labels(t) for t in ("a", "b", "c", "a", "d")] == [
        "a",
        "b",
        OTHER_TENANTS,
        "a",
        "_other",
    ]


def test_the_waiting_gauge_shows_each_tenants_waiting_jobs_and_folds_past_the_limit(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for tenant, count in (("acme", 3), ("bravo", 1), ("charlie", 2)):
        for _ in range(count):
            store.create_job(REQUEST, tenant=tenant, deadline_s=600)
    claimed = store.create_job(REQUEST, tenant="bravo", deadline_s=600)[0]
    assert store.claim(claimed.id, 0) is not None
    state = read_farm_state(store.engine, dict)
    assert state.waiting == {"acme": 3, "bravo": 1, "charlie": 2}

    monkeypatch.setattr(gauges, "TENANT_LABELS_MAX", 2)
    shown = {
        sample.labels["tenant"]: sample.value
        for family in FarmStateCollector(Settings(), lambda: state).collect()
        for sample in family.samples
        if sample.name == "fluxfarm_tenant_jobs_waiting"
    }
    assert shown == {"acme": 3, "charlie": 2, OTHER_TENANTS: 1}
