"""A real farm (two prefork workers, two web processes) scraped by a real Prometheus server.

The brokers are embedded SQLite ones: they keep every message they carried, for the secrets
check, and they are private to the test, unlike a shared Redis or RabbitMQ queue.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from farmdomain.jobs import Job, JobState
from farmdomain.settings import Settings
from fluxfarm.processes import Farm, free_port
from producers.client import FluxfarmClient
from runware_edge.tokens import sign
from tests.metrics.prometheus_server import Prometheus, prometheus_binary, running_prometheus
from tests.services import fresh_postgres_database

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(240),
    pytest.mark.skipif(prometheus_binary() is None, reason="needs Debian's prometheus package"),
]

JOBS = 16
API_KEY = "metrics-test-api-key-7f3a"
SECRET = "metrics-test-webhook-secret-91c2"


@dataclass
class FarmRun:
    farm: Farm
    jobs: list[Job]
    broker_messages: list[bytes]
    web_urls: list[str]
    metrics_urls: list[str]
    prometheus: Prometheus
    charged: Decimal


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FarmRun]:
    tmp = tmp_path_factory.mktemp("farm")
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres_database())
        farm = stack.enter_context(Farm(Settings(data_dir=tmp), log_dir=tmp / "logs"))
        simulator = farm.start_simulator(
            "--api-keys", API_KEY, "--fast-images", "--latency-dist", "uniform",
            "--latency-min-s", "0", "--latency-max-s", "0.3",
        )  # fmt: skip
        ports = [free_port(), free_port()]
        settings = [
            Settings(
                data_dir=tmp,
                database_url=database_url,
                runware_url=f"{simulator}/v1",
                runware_api_key=API_KEY,
                public_base_url=f"http://127.0.0.1:{port}",
                webhook_secret=SECRET,
                broker_url=f"fluxfarm-sqlite+sqlite:///{(tmp / f'broker-{n}.sqlite').resolve()}",
            )
            for n, port in enumerate(ports)
        ]
        web_urls = []
        for name, port, each in zip(("web-a", "web-b"), ports, settings, strict=True):
            farm.settings = each
            web_urls.append(farm.start_web(port, name=name))
        # two pipelines on one store: each worker, with the web process its webhooks go to,
        # has an embedded broker of its own, and each half of the jobs is queued on one, so
        # both web processes receive webhooks however the workers' polls fall
        workers = []
        for name, each in zip(("worker-a", "worker-b"), settings, strict=True):
            farm.settings = each
            workers.append(farm.start_worker(name, concurrency=2))
        metrics_urls = [f"{url}/metrics" for url in web_urls]
        metrics_urls += [str(w.metrics_url) for w in workers]
        prometheus = stack.enter_context(
            running_prometheus(
                tmp / "prometheus",
                {"fluxfarm-web": metrics_urls[:2], "fluxfarm-worker": metrics_urls[2:]},
            )
        )
        jobs = []
        for half, each in enumerate(settings):
            with FluxfarmClient(each) as client:
                job_ids = [
                    client.submit({"positivePrompt": f"a lighthouse, study {half}-{i}",
                                   "width": 512, "height": 512})
                    for i in range(JOBS // 2)
                ]  # fmt: skip
                jobs += client.wait_all(job_ids, timeout=120)
        broker_messages = [m for each in settings for m in _broker_messages(each)]
        charged = httpx.get(f"{simulator}/_sim/stats", timeout=5).json()["charged_usd_exact"]
        yield FarmRun(
            farm, jobs, broker_messages, web_urls, metrics_urls, prometheus, Decimal(charged)
        )


def _broker_messages(settings: Settings) -> list[bytes]:
    """Every message the embedded broker carried: consumed ones are kept, only hidden."""
    path = settings.resolved_broker_url().split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        return [row[0].encode() for row in conn.execute("SELECT payload FROM kombu_message")]


def _summed_scrape(urls: list[str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of every endpoint, summed across endpoints by name and labels."""
    total: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for url in urls:
        for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                total[key] = total.get(key, 0.0) + sample.value
    return total


def test_every_job_succeeds_across_two_workers_and_two_web_processes(run: FarmRun) -> None:
    assert {job.state for job in run.jobs} == {JobState.SUCCEEDED}
    sources = {image.source for job in run.jobs for image in job.images}
    assert sources <= {"webhook", "poll"}


def test_counters_summed_over_every_endpoint_equal_the_number_of_jobs(run: FarmRun) -> None:
    scraped = _summed_scrape(run.metrics_urls)
    model = (("model", "bfl:5@1"),)
    assert scraped[("fluxfarm_jobs_submitted_total", model)] == JOBS
    finished = (("model", "bfl:5@1"), ("status", "succeeded"))
    assert scraped[("fluxfarm_jobs_finished_total", finished)] == JOBS
    assert scraped[("fluxfarm_job_duration_seconds_count", finished)] == JOBS
    assert scraped[("fluxfarm_job_queue_wait_seconds_count", model)] == JOBS
    assert scraped[("fluxfarm_job_cost_usd_count", model)] == JOBS
    results = sum(
        v for (name, _), v in scraped.items() if name == "fluxfarm_results_recorded_total"
    )
    assert results == JOBS
    webhooks = scraped.get(("fluxfarm_webhooks_received_total", (("outcome", "accepted"),)), 0)
    by_poll = scraped.get(("fluxfarm_results_recorded_total", (("source", "poll"),)), 0)
    assert webhooks + by_poll == JOBS
    assert scraped[("fluxfarm_provider_requests_total", (("status", "200"),))] >= JOBS
    assert scraped[("fluxfarm_provider_submit_seconds_count", model)] >= JOBS
    spend = scraped[("fluxfarm_spend_usd_total", model)]
    assert spend == pytest.approx(float(run.charged), abs=1e-9)


def test_both_web_processes_received_webhooks(run: FarmRun) -> None:
    for url in run.metrics_urls[:2]:
        scraped = _summed_scrape([url])
        assert scraped.get(("fluxfarm_webhook_handling_seconds_count", ()), 0) > 0, url


def test_prometheus_query_returns_the_job_and_spend_totals(run: FarmRun) -> None:
    prom = run.prometheus
    # every target is scraped on its own clock, so each total is awaited, not just the first
    finished = 'sum(fluxfarm_jobs_finished_total{status="succeeded"})'
    assert prom.wait_for(finished, JOBS) == JOBS
    assert prom.wait_for("sum(fluxfarm_jobs_submitted_total)", JOBS) == JOBS
    assert prom.wait_for("count(up == 1)", 4) == 4
    # compared in micro-dollars: float sums of exact cents need not be bit-equal
    charged_micros = float(run.charged * 1_000_000)
    spend = prom.wait_for("round(sum(fluxfarm_spend_usd_total) * 1000000)", charged_micros)
    assert spend == charged_micros
    assert prom.wait_for("max(fluxfarm_jobs_in_state{state='succeeded'})", JOBS) == JOBS


def test_spend_endpoint_matches_the_simulator_and_the_counter(run: FarmRun) -> None:
    body = httpx.get(f"{run.web_urls[1]}/v1/spend", timeout=5).json()
    assert Decimal(body["totalUsd"]) == run.charged
    assert sum(row["results"] for row in body["days"]) == JOBS


def _secrets(run: FarmRun) -> list[str]:
    tokens = [sign(job.task_uuid, SECRET.encode()) for job in run.jobs]
    return [API_KEY, SECRET, *tokens]


def test_no_secret_or_token_in_any_log_line_or_broker_message(run: FarmRun) -> None:
    logs = {path.name: path.read_text() for path in run.farm.log_dir.glob("*.log")}
    assert {"web-a.log", "web-b.log", "worker-a.log", "worker-b.log"} <= logs.keys()
    assert len(run.broker_messages) >= JOBS
    for secret in _secrets(run):
        for name, text in logs.items():
            assert secret not in text, f"{name} shows a secret"
        for message in run.broker_messages:
            assert secret.encode() not in message


def _json_lines(farm: Farm) -> list[dict[str, object]]:
    lines = []
    for path in farm.log_dir.glob("*.log"):
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
    return lines


def test_one_canonical_line_per_transition_with_job_and_task_ids(run: FarmRun) -> None:
    lines = _json_lines(run.farm)
    for job in run.jobs:
        transitions = [
            line for line in lines if line["event"] == "job.transition" and line["job_id"] == job.id
        ]
        statuses = [line["status"] for line in transitions]
        assert statuses.count("submitting") == 1
        assert statuses.count("succeeded") == 1
        assert all(line["task_uuid"] == job.task_uuid for line in transitions)
        assert all(isinstance(line["duration_ms"], float) for line in transitions)
    for line in lines:
        if "job_id" in line and line["event"] != "submit.skipped":
            assert "task_uuid" in line, line
