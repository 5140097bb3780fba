"""Every image of a real pipeline's jobs copied into the results store: kept once, the
very bytes the simulator served, decoding at the size the job asked for, and fetched
from the farm's durable URL."""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from fluxfarm.demo import demo_requests
from producers.client import FluxfarmClient
from tests.integration.test_pipeline import JOBS, RunningFarm, farm

pytestmark = pytest.mark.integration
__all__ = ["farm"]  # the fixture: a farm on each broker/store pair of the pipeline test


def _kept_views(web_url: str, job_ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
    """The jobs' views once every image shows its durable copy (waiting, not timing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        views = [httpx.get(f"{web_url}/v1/jobs/{i}", timeout=10).json() for i in job_ids]
        if all(image["sha256"] for view in views for image in view["images"]):
            return views
        if time.monotonic() > deadline:
            missing = sum(not image["sha256"] for v in views for image in v["images"])
            raise AssertionError(f"{missing} images still not kept")
        time.sleep(0.5)


def test_every_image_is_kept_once_as_the_simulator_served_it(farm: RunningFarm) -> None:
    requests = demo_requests(JOBS)
    with FluxfarmClient(farm.settings) as client:
        job_ids = client.submit_many(requests)
        client.wait_all(job_ids, timeout=120)

    views = _kept_views(farm.web_url, job_ids, timeout_s=120)

    keys = set()
    for view, request in zip(views, requests, strict=True):
        assert len(view["images"]) == request["numberResults"]
        for image in view["images"]:
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
