"""Finding 1: with the job store down every route of `web` answers 503 with Retry-After,
in token mode and in open mode; /metrics keeps the process's counters and marks the
store's gauges stale; /healthz says what is down. The store is a PostgreSQL of the
test's own, stopped for the module's tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from farmdomain.jobs import Job
from runware_edge.tokens import sign
from tests.private_servers import PrivatePostgres, running, server_dir
from tests.security.conftest import PARAMS, SECRET, Farm, make_farm

pytestmark = pytest.mark.timeout(180)

IMAGE_URL = "https://im.runware.ai/image/ws/2/ii/a.jpg"


@dataclass
class Outage:
    server: PrivatePostgres
    farms: dict[str, Farm]
    headers: dict[str, dict[str, str]]
    job: Job


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    with server_dir("postgres") as directory:
        server = PrivatePostgres(directory)
        with running(server):
            url = server.create_database()
            modes = {"token": "required", "open": "open"}
            farms: dict[str, Farm] = {}
            openers = []
            for mode, api_auth in modes.items():
                opened = make_farm(
                    Path(tmp_path_factory.mktemp(mode)), database_url=url, api_auth=api_auth
                )
                farms[mode] = next(opened)
                openers.append(opened)
            headers = {"token": farms["token"].bearer("acme"), "open": {}}
            job = farms["token"].job("acme")
            for farm in farms.values():
                # a good reading first: during the outage it is what the gauges show, stale
                assert farm.http.get("/metrics").status_code == 200
            server.stop()
            yield Outage(server, farms, headers, job)
            for opened in openers:
                opened.close()


Call = Callable[[Farm, dict[str, str], Job], Any]

# every /v1 operation in the schema, and the other routes of `web` that read the store
ROUTES: dict[str, Call] = {
    "submitJob": lambda farm, headers, _job: farm.http.post(
        "/v1/jobs", json={"request": PARAMS}, headers=headers
    ),
    "submitJobs": lambda farm, headers, _job: farm.http.post(
        "/v1/jobs/batch", json={"requests": [PARAMS]}, headers=headers
    ),
    "listJobs": lambda farm, headers, _job: farm.http.get(
        "/v1/jobs", params={"state": "queued", "limit": 10}, headers=headers
    ),
    "getJob": lambda farm, headers, job: farm.http.get(f"/v1/jobs/{job.id}", headers=headers),
    "cancelJob": lambda farm, headers, job: farm.http.post(
        f"/v1/jobs/{job.id}/cancel", headers=headers
    ),
    "getJobCallbacks": lambda farm, headers, job: farm.http.get(
        f"/v1/jobs/{job.id}/callbacks", headers=headers
    ),
    "getSpend": lambda farm, headers, _job: farm.http.get("/v1/spend", headers=headers),
    "receiveRunwareResult": lambda farm, _headers, job: farm.http.post(
        f"/webhooks/runware/{job.task_uuid}",
        params={"token": sign(job.task_uuid, SECRET.encode())},
        json={"taskUUID": job.task_uuid, "imageUUID": "img-1", "imageURL": IMAGE_URL},
    ),
}


def test_every_operation_of_the_schema_is_tried(outage: Outage) -> None:
    schema = outage.farms["open"].http.get("/openapi.json").json()
    operations = {
        operation["operationId"] for path in schema["paths"].values() for operation in path.values()
    }
    assert operations == set(ROUTES)


@pytest.mark.parametrize("mode", ["token", "open"])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_route_answers_503_with_retry_after_when_the_store_is_down(
    outage: Outage, mode: str, route: str
) -> None:
    farm = outage.farms[mode]
    answer = ROUTES[route](farm, outage.headers[mode], outage.job)
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "5"
    assert "job store cannot be reached" in answer.text


@pytest.mark.parametrize("mode", ["token", "open"])
def test_healthz_says_the_store_is_down(outage: Outage, mode: str) -> None:
    answer = outage.farms[mode].http.get("/healthz")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert set(answer.json()["down"]) == {"store"}


def _samples(farm: Farm) -> dict[str, float]:
    answer = farm.http.get("/metrics")
    assert answer.status_code == 200, answer.text
    summed: dict[str, float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            summed[sample.name] = summed.get(sample.name, 0) + sample.value
    return summed


@pytest.mark.parametrize("mode", ["token", "open"])
def test_metrics_keep_the_counters_and_mark_the_store_gauges_stale(
    outage: Outage, mode: str
) -> None:
    farm = outage.farms[mode]
    # the reading cached before the outage is served until its cache period ends
    deadline = time.monotonic() + 30
    samples = _samples(farm)
    while samples["fluxfarm_farm_state_stale"] == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        samples = _samples(farm)
    assert samples["fluxfarm_farm_state_stale"] == 1
    assert samples["fluxfarm_farm_state_age_seconds"] > 0
    assert "fluxfarm_jobs_in_state" in samples
    # the process's own counters, e.g. the outage's webhooks answered above or now
    ROUTES["receiveRunwareResult"](farm, {}, outage.job)
    samples = _samples(farm)
    assert samples["fluxfarm_webhooks_received_total"] >= 1


def test_routes_answer_again_once_the_store_is_back(outage: Outage) -> None:
    outage.server.start()
    try:
        for mode, farm in outage.farms.items():
            answer = ROUTES["getJob"](farm, outage.headers[mode], outage.job)
            assert answer.status_code == (200 if mode == "token" else 404)
            assert farm.http.get("/healthz").json() == {"status": "ok", "down": {}}
    finally:
        outage.server.stop()
