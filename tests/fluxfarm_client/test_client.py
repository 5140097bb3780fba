"""fluxfarm-client against a real farm: every method, sync and async, and every refusal
typed as what it means."""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from PIL import Image as PillowImage

from farmdomain.callbacks import Attempt, CallbackStatus, event_id
from farmdomain.pricing import TenantBudget
from fluxfarm_client import (
    AsyncClient,
    BudgetExceeded,
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
from jobstore.budgets import set_budget
from jobstore.callback_events import AttemptRecord, CallbackOutbox
from tests.fluxfarm_client.conftest import REQUEST, RunningWeb, WebFactory

pytestmark = pytest.mark.integration

# an attempt that failed, retried in 5 s
PENDING = (CallbackStatus.PENDING, 5.0)


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

        first = farm.submit(REQUEST, idempotency_key="order-1", priority=4)
        assert first.priority == 4
        assert farm.submit(REQUEST, idempotency_key="order-1", priority=4).id == first.id
        for changed, priority in (({**REQUEST, "seed": 1}, 4), (REQUEST, 0)):
            with pytest.raises(Conflict) as conflict:
                farm.submit(changed, idempotency_key="order-1", priority=priority)
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


def test_a_refusal_for_the_tenants_budget_is_budget_exceeded_and_not_retried(
    bare_web: WebFactory,
) -> None:
    web = bare_web()
    set_budget(web.store.engine, TenantBudget("default", Decimal(0), None))
    with Client(web.url) as farm, pytest.raises(BudgetExceeded) as refused:
        farm.submit(REQUEST)

    assert refused.value.status_code == 402
    [error] = refused.value.errors
    assert (error.field, error.rule) == ("request", "budget")
    assert error.message.startswith("tenant default's daily budget of $0 would be passed")
    assert web.job_count() == 0


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


def test_listing_pages_and_filters_sync_and_async(bare_web: WebFactory) -> None:
    web = bare_web(api_auth="required")
    acme, globex = web.token("acme"), web.token("globex")
    with Client(web.url, token=acme) as farm, Client(web.url, token=globex) as other:
        first = farm.submit(REQUEST, idempotency_key="order-9")
        batch = farm.submit_many([REQUEST, {**REQUEST, "seed": 3}, {**REQUEST, "seed": 4}])
        canceled = farm.cancel(batch[0].id)
        other.submit(REQUEST)
        newest_first = sorted([first, *batch], key=lambda j: (j.created_at, j.id), reverse=True)

        page = farm.list(limit=2)
        assert [job.id for job in page.jobs] == [job.id for job in newest_first[:2]]
        assert page.next_cursor is not None
        rest = farm.list(limit=2, cursor=page.next_cursor)
        assert [job.id for job in rest.jobs] == [job.id for job in newest_first[2:]]
        assert rest.next_cursor is None
        assert [job.id for job in farm.iter_jobs(page_size=1)] == [j.id for j in newest_first]
        assert [job.id for job in farm.list(state=JobState.CANCELED).jobs] == [canceled.id]
        assert [job.id for job in farm.list(idempotency_key="order-9").jobs] == [first.id]
        after_first = farm.list(created_after=first.created_at, state=["queued", "canceled"])
        assert {job.id for job in after_first.jobs} == {job.id for job in batch}
        assert farm.list(created_before=first.created_at).jobs == []
        with pytest.raises(InvalidRequest) as invalid:
            farm.list(limit=501)
        assert [(e.field, e.rule) for e in invalid.value.errors] == [("limit", "maximum")]
        assert len(other.list().jobs) == 1

    async def scenario() -> None:
        async with AsyncClient(web.url, token=acme) as farm:
            paged = [job.id async for job in farm.iter_jobs(page_size=3)]
            assert paged == [job.id for job in newest_first]
            queued = await farm.list(state="queued", limit=1)
            assert queued.jobs[0].state is JobState.QUEUED
            assert queued.next_cursor is not None
            with pytest.raises(InvalidRequest):
                await farm.list(cursor="not-a-cursor")

    asyncio.run(scenario())


def test_callbacks_show_the_event_and_its_attempts_sync_and_async(bare_web: WebFactory) -> None:
    web = bare_web(callback_allowed_hosts="hooks.example.com")
    url = "https://hooks.example.com/fluxfarm"
    with Client(web.url) as farm:
        job = farm.submit(REQUEST, callback_url=url)
        assert job.callback_url == url
        assert farm.callbacks(job.id) == []
        farm.cancel(job.id)
        outbox = CallbackOutbox(web.store.engine)
        [event] = outbox.claim([job.id], lease_s=30)
        attempt = Attempt(event.created_at, 500, 8.0, "down", None)
        outbox.record([AttemptRecord(event, b"{}", attempt, *PENDING)])
        [callback] = farm.callbacks(job.id)
        assert (callback.id, callback.type, callback.url) == (event_id(job.id), "job.canceled", url)
        assert (callback.status, callback.delivered_at) == ("pending", None)
        [attempt] = callback.attempts
        assert (attempt.status_code, attempt.latency_ms, attempt.answer) == (500, 8.0, "down")
        with pytest.raises(InvalidRequest) as invalid:
            farm.submit(REQUEST, callback_url="https://evil.example.com/")
        assert [(e.field, e.rule) for e in invalid.value.errors] == [
            ("callbackUrl", "allowed_host")
        ]
        with pytest.raises(NotFound):
            farm.callbacks("no-such-job")

    async def scenario() -> None:
        async with AsyncClient(web.url) as farm:
            assert await farm.callbacks(job.id) == [callback]
            [made] = await farm.submit_many([REQUEST], callback_url=url)
            assert made.callback_url == url

    asyncio.run(scenario())
