"""Runware's upload straight into an S3 results store (uploadEndpoint) through the real
pipeline and moto's S3 server: a job of one image carries a presigned PUT URL, the
simulator PUTs the image there and the copy only checks it; a job of several images keeps
the copy; an upload that is not the image asked for is refused, counted and deleted."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine

from farmdomain.settings import Settings
from fluxfarm.processes import Farm, Pipeline, start_pipeline
from imagestore import image_key, upload_key
from jobstore.copies import CopyState, ResultCopies
from producers.client import FluxfarmClient
from tests.s3server import ACCESS_KEY, SECRET_KEY, MotoS3

pytestmark = pytest.mark.integration

REQUEST = {"positivePrompt": "a tide pool under a pier", "width": 320, "height": 256}


@dataclass
class UploadFarm:
    pipeline: Pipeline
    s3: MotoS3
    copies: ResultCopies

    def stats(self) -> dict[str, Any]:
        found: dict[str, Any] = httpx.get(
            f"{self.pipeline.simulator_url}/_sim/stats", timeout=10
        ).json()
        return found

    def run(self, *requests: dict[str, Any]) -> list[str]:
        with FluxfarmClient(self.pipeline.settings) as client:
            job_ids = client.submit_many([{**REQUEST, **r} for r in requests])
            client.wait_all(job_ids, timeout=60)
        return job_ids

    def done(self, job_id: str, images: int, timeout_s: float = 60) -> list[CopyState]:
        """The job's copies once each is kept or given up on (waited for, not timed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = list(self.copies.of_job(job_id).values())
            if len(states) == images and all(s.stored_at or s.given_up for s in states):
                return states
            time.sleep(0.1)
        raise AssertionError(f"the copies of job {job_id} never finished")

    def object(self, key: str) -> bytes | None:
        client = self.s3.client()
        try:
            body: bytes = client.get_object(Bucket=self.s3.bucket, Key=f"farm/{key}")["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
        return body


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UploadFarm]:
    tmp_path: Path = tmp_path_factory.mktemp("uploads")
    with Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "logs") as processes:
        s3 = MotoS3(processes, tmp_path)
        s3.start()
        pipeline = start_pipeline(
            processes,
            api_key="upload-key",
            simulator_flags=("--fast-images",),
            broker_url=None,
            webhook_secret="upload-secret",
            results_url=s3.results_url(),
            results_access_key_id=ACCESS_KEY,
            results_secret_access_key=SECRET_KEY,
            results_upload="url",
            copy_retry_base_s=0.2,
            copy_retry_max_s=1.0,
        )
        engine = create_engine(pipeline.settings.resolved_database_url())
        try:
            yield UploadFarm(pipeline, s3, ResultCopies(engine))
        finally:
            engine.dispose()


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def test_a_one_image_job_is_uploaded_by_runware_and_kept_after_a_check(
    farm: UploadFarm,
) -> None:
    before = farm.stats()

    single, several = farm.run({"numberResults": 1}, {"numberResults": 2})

    [kept] = farm.done(single, 1)
    assert kept.key == upload_key(single, "JPG")
    uploaded = farm.object(kept.key)
    assert _sha(uploaded) == kept.sha256
    # the bytes Runware serves at its imageURL are the ones it uploaded
    with FluxfarmClient(farm.pipeline.settings) as client:
        [image] = client.get(single).images
    assert image.image_url is not None
    assert _sha(httpx.get(image.image_url, timeout=10).content) == kept.sha256
    # several images to one endpoint is undocumented: none is asked for, each is copied
    copied = farm.done(several, 2)
    assert sorted(str(c.key) for c in copied) == sorted(
        image_key(several, uuid, "JPG") for uuid in farm.copies.of_job(several)
    )
    assert all(_sha(farm.object(str(c.key))) == c.sha256 for c in copied)
    after = farm.stats()
    assert after["upload_attempts"] - before["upload_attempts"] == 1
    assert after["uploads_delivered"] - before["uploads_delivered"] == 1


def test_an_upload_that_is_not_the_image_asked_for_is_refused_and_deleted(
    farm: UploadFarm,
) -> None:
    faults = f"{farm.pipeline.simulator_url}/_sim/faults"
    httpx.post(faults, json={"hostile_images": "wrong_size"}, timeout=10).raise_for_status()
    try:
        [job_id] = farm.run({"numberResults": 1})
        [refused] = farm.done(job_id, 1)
    finally:
        httpx.delete(faults, timeout=10).raise_for_status()

    assert (refused.given_up, refused.failure_reason, refused.key) == (True, "size", None)
    assert farm.object(upload_key(job_id, "JPG")) is None
