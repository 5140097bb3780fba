"""The reaper against a real store, a real simulator as Runware and a real SQLite broker:
lost messages are republished, stuck submissions resubmitted, lost webhooks found by polling,
and overdue jobs failed with a reason."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from farmdomain.broker import SUBMIT_QUEUE, SUBMIT_TASK
from farmdomain.jobs import Job, JobState
from farmdomain.settings import Settings
from farmdomain.values import IncomingResult
from jobstore.engine import make_engine
from jobstore.migrations import upgrade
from jobstore.retention import Retention
from jobstore.store import JobStore
from runware_edge.client import inference_task
from runware_edge.tokens import webhook_url
from simulator.settings import SimulatorSettings
from simulator.testing import SimulatorHandle, running_simulator
from tests.jobstore.conftest import Clock, copies_of, keep_images, kept_image
from worker.app import create_app
from worker.context import WorkerContext
from worker.reaper import reap_once

PARAMS: dict[str, Any] = {"positivePrompt": "a lighthouse", "width": 256, "height": 256}


def closed_port_url() -> str:
    """A base URL where nothing listens, so every webhook to it is lost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    settings = SimulatorSettings(
        webhook_max_attempts=1, webhook_timeout_s=0.5, webhook_backoff_s=0.01, random_seed=3
    )
    with running_simulator(settings) as handle:
        yield handle


class Broker:
    """The submit queue of the broker the Celery app publishes to."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def drain(self) -> list[tuple[str, list[Any]]]:
        found: list[tuple[str, list[Any]]] = []
        with self.app.connection_for_read() as conn:
            channel = conn.default_channel
            while (message := channel.basic_get(SUBMIT_QUEUE, no_ack=True)) is not None:
                args, _kwargs, _embed = message.decode()
                found.append((message.headers["task"], list(args)))
        return found


@pytest.fixture
def broker(context: WorkerContext) -> Broker:
    queue = Broker(context.app)
    queue.drain()
    return queue


@pytest.fixture
def context(tmp_path: Path, sim: SimulatorHandle, clock: Clock) -> Iterator[WorkerContext]:
    settings = Settings(
        data_dir=tmp_path,
        runware_url=sim.api_url,
        runware_api_key="sim-key",
        webhook_secret="reaper-secret",
        public_base_url=closed_port_url(),
    )
    upgrade(settings.resolved_database_url())
    made = create_app(settings).context
    made.store.engine.dispose()
    # the store's clock is the test's, so "old" needs no waiting
    made.store = JobStore(make_engine(settings.resolved_database_url()), clock=clock)
    yield made
    made.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def reap(context: WorkerContext, clock: Clock) -> Any:
    return reap_once(context, clock.now)


def new_job(context: WorkerContext, number_results: int = 1, deadline_s: float = 3600) -> Job:
    job, _ = context.store.create_job(
        {**PARAMS, "numberResults": number_results}, tenant="acme", deadline_s=deadline_s
    )
    return job


def submit_to_simulator(context: WorkerContext, sim: SimulatorHandle, job: Job) -> None:
    """Claim and really submit; the webhook goes to a closed port, so only polling finds it."""
    claimed = context.store.claim(job.id, 0)
    assert claimed is not None
    url = webhook_url(context.settings.public_base_url, job.task_uuid, b"reaper-secret")
    ack = context.runware.submit(inference_task(job.task_uuid, claimed.request, url))
    # the acknowledgement names the task (the simulator's default) or nothing (--ack-body empty)
    assert ack in ([], [{"taskType": "imageInference", "taskUUID": job.task_uuid}])
    assert context.store.mark_submitted(job.id, {"attempt": 1})
    deadline = time.monotonic() + 10
    while sim.task(job.task_uuid)["status"] != "done":  # wait for generation, not for time
        assert time.monotonic() < deadline, "the simulator did not finish the task"
        time.sleep(0.02)


def test_a_queued_job_older_than_the_threshold_is_republished_once(
    context: WorkerContext, clock: Clock, broker: Broker
) -> None:
    old = new_job(context)
    clock.advance(context.settings.queued_republish_after_s + 1)
    fresh = new_job(context)
    report = reap(context, clock)
    assert report.republished == [old.id]
    assert broker.drain() == [(SUBMIT_TASK, [old.id, 0])]
    after = context.store.get(old.id, details=True)
    assert after.state is JobState.QUEUED
    assert after.updated_at == clock.now
    assert after.events[-1].kind == "republished"
    # touched: the next pass leaves it alone until it is old again
    assert reap(context, clock).republished == []
    assert broker.drain() == []
    assert context.store.get(fresh.id).state is JobState.QUEUED


def test_a_stale_submitting_job_is_resubmitted_with_its_attempt_count(
    context: WorkerContext, clock: Clock, broker: Broker
) -> None:
    job = new_job(context)
    assert context.store.claim(job.id, 0) is not None
    assert context.store.claim(job.id, 1) is not None
    clock.advance(context.settings.submitting_stale_after_s - 1)
    assert reap(context, clock).resubmitted == []
    clock.advance(2)
    report = reap(context, clock)
    assert report.resubmitted == [job.id]
    assert broker.drain() == [(SUBMIT_TASK, [job.id, 2])]
    after = context.store.get(job.id, details=True)
    assert (after.state, after.attempts) == (JobState.SUBMITTING, 2)
    assert (after.events[-1].kind, after.events[-1].detail) == ("resubmitted", {"attempt": 2})
    assert reap(context, clock).resubmitted == []


def test_a_submitted_job_whose_webhooks_were_lost_is_completed_by_polling(
    context: WorkerContext, clock: Clock, sim: SimulatorHandle, broker: Broker
) -> None:
    job = new_job(context, number_results=2)
    submit_to_simulator(context, sim, job)
    assert context.store.get(job.id).state is JobState.SUBMITTED  # no webhook came
    clock.advance(context.settings.submitted_poll_after_s + 1)
    report = reap(context, clock)
    assert report.polled == [job.id]
    after = context.store.get(job.id, details=True)
    # every result is in: the job waits for its copies, and Runware is not asked again
    assert after.state is JobState.SUBMITTED
    assert [i.source for i in after.images] == ["poll", "poll"]
    assert after.cost_usd == Decimal("0.06")  # 2 images at the 1-megapixel price
    assert after.cost_usd == sum(i.cost_usd or 0 for i in after.images)
    clock.advance(context.settings.submitted_poll_after_s + 1)
    assert reap(context, clock).polled == []
    assert context.store.get(job.id, details=True).events[-1].kind == "awaiting_copies"
    assert context.store.get(job.id).cost_usd == Decimal("0.06")
    assert broker.drain() == []
    keep_images(context.store, job.id, clock)
    done = context.store.get(job.id, details=True)
    assert done.state is JobState.SUCCEEDED
    assert done.events[-1].detail == {"images": 2}


def test_a_submitted_job_runware_does_not_know_fails_as_lost(
    context: WorkerContext, clock: Clock, broker: Broker
) -> None:
    job = new_job(context)
    context.store.claim(job.id, 0)
    context.store.mark_submitted(job.id, {})
    clock.advance(context.settings.submitted_poll_after_s + 1)
    assert reap(context, clock).polled == [job.id]
    after = context.store.get(job.id)
    assert after.state is JobState.FAILED
    assert after.failure_reason == "lost"
    assert after.failure_code == "taskNotFound"


def test_overdue_jobs_fail_with_timeout_and_keep_partial_results(
    context: WorkerContext, clock: Clock, sim: SimulatorHandle, broker: Broker
) -> None:
    queued = new_job(context, deadline_s=60)
    partial = new_job(context, number_results=2, deadline_s=60)
    context.store.claim(partial.id, 0)
    # one image came in by webhook before the worker's "submitted" write
    image = IncomingResult(
        partial.task_uuid, str(uuid.uuid4()), "u", None, 1, Decimal("0.03"), None
    )
    context.store.record_result(image, "webhook")
    on_time = new_job(context, deadline_s=3600)
    clock.advance(61)
    report = reap(context, clock)
    assert sorted(report.timed_out) == sorted([queued.id, partial.id])
    for job_id in (queued.id, partial.id):
        failed = context.store.get(job_id)
        assert failed.state is JobState.FAILED
        assert failed.failure_reason == "timeout"
    kept = context.store.get(partial.id)
    assert kept.images_received == 1
    assert kept.cost_usd == Decimal("0.03")
    assert context.store.get(on_time.id).state is JobState.QUEUED
    assert report.republished == []  # not yet old enough to be presumed lost
    assert broker.drain() == []
    assert reap(context, clock).timed_out == []


def test_an_overdue_submitted_job_still_processing_is_polled_then_timed_out(
    context: WorkerContext, clock: Clock, sim: SimulatorHandle, broker: Broker
) -> None:
    sim.set_faults(latency_s=60.0)
    try:
        job = new_job(context, number_results=1, deadline_s=30)
        claimed = context.store.claim(job.id, 0)
        assert claimed is not None
        url = webhook_url(context.settings.public_base_url, job.task_uuid, b"reaper-secret")
        context.runware.submit(inference_task(job.task_uuid, claimed.request, url))
        context.store.mark_submitted(job.id, {})
        clock.advance(31)
        report = reap(context, clock)
    finally:
        sim.reset_faults()
    assert report.timed_out == [job.id]
    after = context.store.get(job.id)
    assert (after.state, after.failure_reason) == (JobState.FAILED, "timeout")
    assert after.images == []


def test_a_job_still_waiting_on_copies_at_its_deadline_fails_naming_each_image_not_stored(
    context: WorkerContext, clock: Clock, broker: Broker
) -> None:
    job = new_job(context, number_results=3, deadline_s=60)
    context.store.claim(job.id, 0)
    context.store.mark_submitted(job.id, {})
    images = [
        IncomingResult(job.task_uuid, f"img-{n}", "u", None, 1, Decimal("0.03"), None)
        for n in range(3)
    ]
    context.store.record_results(images, "webhook")
    copies = copies_of(context.store, clock)
    orders = copies.orders([(job.task_uuid, f"img-{n}") for n in range(3)])
    stored, failing, _untried = sorted(orders, key=lambda order: order.image_uuid)
    assert copies.stored(stored, kept_image(job.id, stored.image_uuid))
    copies.failed(failing, "storage", "the results store is down", give_up=False)
    clock.advance(61)

    report = reap(context, clock)

    assert report.timed_out == [job.id]
    after = context.store.get(job.id)
    assert (after.state, after.failure_reason) == (JobState.FAILED, "storage")
    assert after.failure_message == (
        "deadline passed with 2 of 3 images not stored:"
        " img-1: storage, still retrying; img-2: not tried yet, still retrying"
    )
    # Runware billed all three; the one stored stays served
    assert after.cost_usd == Decimal("0.09")
    assert [i.sha256 is not None for i in after.images] == [True, False, False]
    assert broker.drain() == []


def test_a_pass_deletes_images_past_their_tenants_retention(
    context: WorkerContext, clock: Clock, broker: Broker
) -> None:
    job = new_job(context)
    context.store.claim(job.id, 0)
    image = IncomingResult(job.task_uuid, "img-0", "u", None, 1, Decimal("0.03"), None)
    context.store.record_result(image, "webhook")
    kept = kept_image(job.id, "img-0")
    context.copier.results.put(kept.key, b"bytes", kept.content_type, kept.sha256)
    keep_images(context.store, job.id, clock)
    Retention(context.store.engine).set_days("acme", 1)

    clock.advance(3600)
    assert reap(context, clock).expired == 0
    clock.advance(24 * 3600)
    assert reap(context, clock).expired == 1

    assert context.copier.results.head(kept.key) is None
    assert context.store.get(job.id).images[0].deleted_at == clock.now
