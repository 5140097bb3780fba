"""The whole pipeline with real processes: simulator, web under uvicorn, Celery workers, beat."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from farmdomain.jobs import JobState
from farmdomain.settings import Settings
from fluxfarm.demo import demo_requests
from fluxfarm.processes import Farm, start_pipeline
from producers.client import FluxfarmClient
from simulator.testing import OLD_SHAPE_FLAGS
from tests.services import fresh_postgres_database

pytestmark = pytest.mark.integration

JOBS = 50
SIMULATOR_KEY = "integration-key"


@dataclass(frozen=True)
class Backend:
    broker: str
    store: str
    shapes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.broker}-broker-{self.store}-store" + ("-old-shapes" if self.shapes else "")


BACKENDS = [
    Backend("rabbitmq", "postgres"),
    Backend("redis", "postgres"),
    Backend("redis", "sqlite"),
    Backend("sqlite", "sqlite"),
    # the shapes touch only the simulator's answers: one broker and store pair proves them
    Backend("redis", "sqlite", OLD_SHAPE_FLAGS),
]


@dataclass
class RunningFarm:
    settings: Settings
    simulator_url: str
    web_url: str
    backend: Backend

    def charged(self) -> Decimal:
        stats = httpx.get(f"{self.simulator_url}/_sim/stats", timeout=5).json()
        return Decimal(stats["charged_usd_exact"])


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def farm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningFarm]:
    backend: Backend = request.param
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(fresh_postgres_database()) if backend.store == "postgres" else None
        )
        fixture = {"rabbitmq": "amqp_url", "redis": "redis_url"}.get(backend.broker)
        broker_url = request.getfixturevalue(fixture) if fixture else None
        farm = stack.enter_context(Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "logs"))
        latency = ("--latency-dist", "uniform", "--latency-min-s", "0", "--latency-max-s", "0.3")
        pipeline = start_pipeline(
            farm,
            api_key=SIMULATOR_KEY,
            simulator_flags=("--fast-images", *latency, *backend.shapes),
            worker_name="worker-a",
            broker_url=broker_url,
            database_url=database_url,
            webhook_secret="integration-secret",
        )
        yield RunningFarm(pipeline.settings, pipeline.simulator_url, pipeline.web_url, backend)


def test_fifty_jobs_succeed_with_every_image_and_cost_the_simulator_charged(
    farm: RunningFarm,
) -> None:
    requests = demo_requests(JOBS)
    # every way in: the client one by one and in a batch, the HTTP API one by one and in a
    # batch (both batches go to the workers as messages of several jobs)
    quarter = JOBS // 4
    one_by_one, batched = requests[:quarter], requests[quarter : 2 * quarter]
    over_http, batched_over_http = requests[2 * quarter : 3 * quarter], requests[3 * quarter :]
    with FluxfarmClient(farm.settings) as client:
        job_ids = [client.submit(request) for request in one_by_one]
        job_ids += client.submit_many(batched)
        for request in over_http:
            response = httpx.post(f"{farm.web_url}/v1/jobs", json={"request": request}, timeout=10)
            assert response.status_code == 201, response.text
            job_ids.append(response.json()["id"])
        response = httpx.post(
            f"{farm.web_url}/v1/jobs/batch", json={"requests": batched_over_http}, timeout=10
        )
        assert response.status_code == 201, response.text
        job_ids += [view["id"] for view in response.json()["jobs"]]
        jobs = client.wait_all(job_ids, timeout=120)

    states = {job.id: job.state for job in jobs if job.state is not JobState.SUCCEEDED}
    assert states == {}
    for job, request in zip(jobs, requests, strict=True):
        assert len(job.images) == request["numberResults"] == job.number_results
        assert all(image.source in ("webhook", "poll") for image in job.images)
        assert job.cost_usd == sum(image.cost_usd or Decimal(0) for image in job.images)
    assert any(job.number_results > 1 for job in jobs)
    assert sum((job.cost_usd for job in jobs), Decimal(0)) == farm.charged()
    shapes = httpx.get(f"{farm.simulator_url}/_sim/shapes", timeout=5).json()
    old = bool(farm.backend.shapes)
    assert (shapes["ack_body"], shapes["webhook_body"]) == (
        ("empty", "wrapped") if old else ("echo", "flat")
    )
