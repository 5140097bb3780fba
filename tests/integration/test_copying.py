"""Every image of a real pipeline's jobs copied into the results store: a job is reported
succeeded only once each of its images is kept, the very bytes the simulator served,
decoding at the size the job asked for, and fetched from the farm's durable URL; after
Runware's URLs expire, `fluxfarm download` still fetches every image, sha256-checked."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from farmdomain.jobs import JobState
from farmdomain.settings import Settings
from fluxfarm.demo import demo_requests
from fluxfarm.processes import Farm, settings_env, start_pipeline
from producers.client import FluxfarmClient
from tests.integration.test_pipeline import JOBS, SIMULATOR_KEY, RunningFarm, farm

pytestmark = pytest.mark.integration
__all__ = ["farm"]  # the fixture: a farm on each broker/store pair of the pipeline test

# the simulator's imageURLs live this share of the ttl the farm asks for (3600 s): 14.4 s
TTL_SCALE = 0.004
EXPIRING_JOBS = 4


def test_every_image_is_kept_once_as_the_simulator_served_it(farm: RunningFarm) -> None:
    requests = demo_requests(JOBS)
    with FluxfarmClient(farm.settings) as client:
        job_ids = client.submit_many(requests)
        client.wait_all(job_ids, timeout=120)

    # succeeded means kept: the views are read once, with no waiting for copies
    views = [httpx.get(f"{farm.web_url}/v1/jobs/{i}", timeout=10).json() for i in job_ids]

    keys = set()
    for view, request in zip(views, requests, strict=True):
        assert view["state"] == "succeeded"
        assert len(view["images"]) == request["numberResults"]
        for image in view["images"]:
            assert image["stored"]
            served = httpx.get(image["imageURL"], timeout=10).content
            durable = httpx.get(image["url"], timeout=10)
            assert durable.status_code == 200
            digest = hashlib.sha256(durable.content).hexdigest()
            assert digest == image["sha256"] == hashlib.sha256(served).hexdigest()
            assert image["bytes"] == len(durable.content)
            with Image.open(io.BytesIO(durable.content)) as decoded:
                assert decoded.size == (request["width"], request["height"])
            keys.add(image["url"].split("?")[0])
    stored = list((farm.settings.data_dir / "results" / "images").rglob("*.*"))
    assert len(stored) == len(keys) == sum(r["numberResults"] for r in requests)


@pytest.fixture
def expiring_farm(tmp_path: Path) -> Iterator[Settings]:
    """A farm on the embedded broker and store whose simulator's URLs expire soon."""
    with Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "logs") as farm:
        pipeline = start_pipeline(
            farm,
            api_key=SIMULATOR_KEY,
            simulator_flags=("--fast-images", "--ttl-scale", str(TTL_SCALE)),
            worker_name="worker-a",
            webhook_secret="integration-secret",
        )
        yield pipeline.settings


def _gone(url: str, timeout_s: float) -> None:
    """Wait until the simulator no longer serves `url` (its ttl ran out)."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(url, timeout=10).status_code != 404:
        assert time.monotonic() < deadline, f"{url} still served"
        time.sleep(0.5)


def test_after_runwares_urls_expire_download_still_fetches_every_image(
    expiring_farm: Settings, tmp_path: Path
) -> None:
    requests = demo_requests(EXPIRING_JOBS)
    with FluxfarmClient(expiring_farm) as client:
        job_ids = client.submit_many(requests)
        jobs = client.wait_all(job_ids, timeout=120)
    assert {
        job.id: job.failure_message for job in jobs if job.state is not JobState.SUCCEEDED
    } == {}
    images = [image for job in jobs for image in job.images]
    served = {}
    for image in images:
        assert image.image_url is not None
        served[image.image_uuid] = hashlib.sha256(httpx.get(image.image_url).content).hexdigest()
    for image in images:
        _gone(image.image_url or "", timeout_s=120)

    out = tmp_path / "out"
    for job in jobs:
        done = subprocess.run(
            [sys.executable, "-m", "fluxfarm.cli", "download", job.id, str(out)],
            env={**os.environ, **settings_env(expiring_farm)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.split()) == job.number_results
    saved = {path.stem: path.read_bytes() for path in out.rglob("*.*")}
    assert len(saved) == len(images) == sum(r["numberResults"] for r in requests)
    for image in images:
        data = saved[image.image_uuid]
        assert hashlib.sha256(data).hexdigest() == image.sha256 == served[image.image_uuid]
