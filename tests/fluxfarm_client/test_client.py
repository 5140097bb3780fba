"""fluxfarm-client against a real farm: every method, sync and async, and every refusal
typed as what it means."""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from PIL import Image as PillowImage

from fluxfarm_client import (
    AsyncClient,
    Client,
    Conflict,
    Forbidden,
    InvalidRequest,
    Job,
    JobState,
    NotFound,
    Unauthorized,
    WaitTimedOut,
)
from tests.fluxfarm_client.conftest import REQUEST, RunningWeb, WebFactory

pytestmark = pytest.mark.integration


def _check_downloads(job: Job, paths: list[Path], folder: Path) -> None:
    """Each saved file is its image as the provider serves it, named by its imageUUID."""
    assert [p.parent for p in paths] == [folder / job.id] * len(job.images)
    for image, path in zip(job.images, paths, strict=True):
        # the request leaves outputFormat to its default, JPG
        assert path.name == f"{image.image_uuid}.jpg"
        assert image.image_url is not None
        served = httpx.get(image.image_url, timeout=10).content
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(served).digest()
        with PillowImage.open(io.BytesIO(path.read_bytes())) as decoded:
            assert decoded.size == (REQUEST["width"], REQUEST["height"])


def _without_copies(job: Job) -> Job:
    """`job` as it reads before its images are kept: a job is succeeded before its images'
    copies land, so a later read may carry their durable url, sha256 and size."""
    plain = [replace(image, url=None, sha256=None, size_bytes=None) for image in job.images]
    return replace(job, images=plain)


def test_sync_client_submits_waits_gets_downloads_and_cancels(
    pipeline: RunningWeb, tmp_path: Path
) -> None:
    with Client(pipeline.url) as farm:
        queued = farm.submit(REQUEST, deadline_s=300)
        assert queued.request == REQUEST
        assert queued.state in (JobState.QUEUED, JobState.SUBMITTING, JobState.SUBMITTED)

        done = farm.wait(queued.id, timeout=60)
        assert done.state is JobState.SUCCEEDED
        assert len(done.images) == done.number_results == 1
        assert done.cost_usd == sum(image.cost_usd or 0 for image in done.images)
        assert _without_copies(farm.get(queued.id)) == _without_copies(done)

        batch = farm.submit_many([REQUEST, {**REQUEST, "seed": 7, "numberResults": 2}])
        assert [job.request["seed"] for job in batch[1:]] == [7]
        finished = [farm.wait(job.id, timeout=60) for job in batch]
        assert [job.state for job in finished] == [JobState.SUCCEEDED] * 2
        assert [len(job.images) for job in finished] == [1, 2]

        paths = farm.download(finished[1].id, tmp_path)
        _check_downloads(finished[1], paths, tmp_path)

        # a terminal job comes back unchanged
        assert farm.cancel(done.id).state is JobState.SUCCEEDED


def test_async_client_submits_waits_gets_downloads_and_cancels(
    pipeline: RunningWeb, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with AsyncClient(pipeline.url) as farm:
            queued = await farm.submit(REQUEST)
            together = await farm.submit_many([REQUEST, {**REQUEST, "seed": 11}])
            finished = await asyncio.gather(
                *(farm.wait(job.id, timeout=60) for job in [queued, *together])
            )
            assert [job.state for job in finished] == [JobState.SUCCEEDED] * 3
            assert _without_copies(await farm.get(queued.id)) == _without_copies(finished[0])
            paths = await farm.download(queued.id, tmp_path)
            _check_downloads(finished[0], paths, tmp_path)
            assert (await farm.cancel(queued.id)).state is JobState.SUCCEEDED

    asyncio.run(scenario())


def test_cancel_and_wait_timeout_on_a_job_no_worker_takes(bare_web: WebFactory) -> None:
    web = bare_web()
    with Client(web.url) as farm:
        job = farm.submit(REQUEST)
        with pytest.raises(WaitTimedOut, match=f"job {job.id} still queued"):
            farm.wait(job.id, timeout=1.0)
        canceled = farm.cancel(job.id)
        assert canceled.state is JobState.CANCELED
        assert farm.wait(job.id, timeout=5).state is JobState.CANCELED

    async def scenario() -> None:
        async with AsyncClient(web.url) as farm:
            job = await farm.submit(REQUEST)
            with pytest.raises(WaitTimedOut):
                await farm.wait(job.id, timeout=0.5)
            assert (await farm.cancel(job.id)).state is JobState.CANCELED

    asyncio.run(scenario())


def test_refusals_are_typed_and_name_the_field_and_rule(bare_web: WebFactory) -> None:
    web = bare_web()
    with Client(web.url) as farm:
        with pytest.raises(InvalidRequest) as invalid:
            farm.submit({**REQUEST, "width": 100, "steps": 3})
        rules = {(e.field, e.rule) for e in invalid.value.errors}
        assert ("request.width", "multiple_of_16") in rules
        assert "request.steps" in {field for field, _rule in rules}
        assert invalid.value.status_code == 422

        with pytest.raises(NotFound):
            farm.get("no-such-job")

        first = farm.submit(REQUEST, idempotency_key="order-1")
        assert farm.submit(REQUEST, idempotency_key="order-1").id == first.id
        with pytest.raises(Conflict) as conflict:
            farm.submit({**REQUEST, "seed": 1}, idempotency_key="order-1")
        assert conflict.value.errors[0].field == "idempotencyKey"
    assert web.job_count() == 1

    async def scenario() -> None:
        async with AsyncClient(web.url) as farm:
            with pytest.raises(InvalidRequest):
                await farm.submit_many([REQUEST, {"width": 512}])
            with pytest.raises(NotFound):
                await farm.cancel("no-such-job")

    asyncio.run(scenario())
    assert web.job_count() == 1


def test_tokens_decide_the_tenant_and_what_it_may_do(bare_web: WebFactory) -> None:
    web = bare_web(api_auth="required")
    with Client(web.url) as anonymous, pytest.raises(Unauthorized):
        anonymous.submit(REQUEST)
    with Client(web.url, token="not-a-token") as forged, pytest.raises(Unauthorized):
        forged.get("anything")
    with Client(web.url, token=web.token("acme")) as acme:
        job = acme.submit(REQUEST)
        assert job.tenant == "acme"
    with Client(web.url, token=web.token("acme", can_write=False)) as reader:
        assert reader.get(job.id).id == job.id
        with pytest.raises(Forbidden):
            reader.cancel(job.id)
    with Client(web.url, token=web.token("globex")) as other, pytest.raises(NotFound):
        other.get(job.id)
