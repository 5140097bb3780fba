"""Copying result images: fetched from a real HTTP server (or decoded inline), checked,
written once to the directory or S3 store, recorded on the result; hostile images refused
and counted with nothing written; storage down retried, never lost."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from farmdomain.jobs import Job, JobState
from farmdomain.metrics import _local_registry
from farmdomain.settings import Settings
from farmdomain.values import IncomingResult
from farmdomain.views import JobView
from fluxfarm.processes import free_port
from imagestore import ResultsStore, open_results_store
from jobstore.callback_events import CallbackOutbox
from jobstore.creation import NewJob
from jobstore.migrations import upgrade
from jobstore.schema import results
from jobstore.store import JobStore
from tests.http_servers import serve_asgi
from tests.s3server import MotoS3, moto_s3
from worker.copying import Copier

__all__ = ["moto_s3"]  # the fixture, for this module's tests

WIDTH, HEIGHT = 64, 48
CAP = 200_000


def _png(size: tuple[int, int] = (WIDTH, HEIGHT)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(out, "PNG")
    return out.getvalue()


IMAGES = {
    "good": (_png(), "image/png"),
    "not-an-image": (b"\x89PNG\r\n\x1a\n" + b"no pixels here" * 50, "image/png"),
    "wrong-size": (_png((WIDTH * 2, HEIGHT)), "image/png"),
    "too-large": (b"\x89PNG\r\n\x1a\n" + b"\0" * (CAP + 1), "image/png"),
}
SERVED: dict[str, int] = {}


async def _image(request: Request) -> Response:
    name = request.path_params["name"]
    SERVED[name] = SERVED.get(name, 0) + 1
    if name == "failing":
        return Response(b"busy", 503, media_type="text/plain")
    data, content_type = IMAGES[name]
    return Response(data, media_type=content_type)


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    with serve_asgi(Starlette(routes=[Route("/img/{name}", _image)])) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, image_host: str) -> Settings:
    found = Settings(
        data_dir=tmp_path,
        webhook_secret="copy-secret",
        download_hosts=image_host,
        download_max_bytes=CAP,
        copy_retry_base_s=0.01,
        copy_retry_max_s=0.02,
    )
    upgrade(found.resolved_database_url())
    return found


def _recorded(store: JobStore, url: str | None = None, data: str | None = None) -> tuple[str, str]:
    params: dict[str, Any] = {
        "positivePrompt": "a copper kettle",
        "width": WIDTH,
        "height": HEIGHT,
        "outputFormat": "PNG",
    }
    job, _ = store.create_job(params, tenant="acme", deadline_s=600)
    image_uuid = str(uuid.uuid4())
    store.record_result(
        IncomingResult(job.task_uuid, image_uuid, url, data, 7, None, False), "webhook"
    )
    return job.task_uuid, image_uuid


def _count(name: str, **labels: str) -> float:
    return _local_registry().get_sample_value(f"fluxfarm_{name}", labels) or 0.0


def test_a_url_image_is_checked_written_once_and_recorded_with_its_digest(
    store: JobStore, settings: Settings, results_store: ResultsStore, image_host: str
) -> None:
    copier = Copier(settings, store.engine, results_store)
    key = _recorded(store, url=f"{image_host}/img/good")
    stored_before = _count("images_stored_total", store=results_store.kind)

    [copied] = copier.copy_all([key, key])
    assert copier.copy_all([key]) == []  # kept already: nothing fetched, nothing written

    data = IMAGES["good"][0]
    assert copied.kept is not None
    assert copied.written
    assert results_store.get(copied.kept.key) == data
    [state] = copier.copies.of_job(copied.order.job_id).values()
    assert (state.sha256, state.size, state.content_type, state.attempts) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
        "image/png",
        1,
    )
    assert _count("images_stored_total", store=results_store.kind) == stored_before + 1
    copier.close()


def test_inline_data_is_kept_in_the_store_and_leaves_the_database(
    store: JobStore, settings: Settings, results_store: ResultsStore
) -> None:
    copier = Copier(settings, store.engine, results_store)
    inline = "data:image/png;base64," + base64.b64encode(IMAGES["good"][0]).decode()
    task_uuid, image_uuid = _recorded(store, data=inline)

    [copied] = copier.copy_all([(task_uuid, image_uuid)])

    assert copied.kept is not None
    assert results_store.get(copied.kept.key) == IMAGES["good"][0]
    with store.engine.connect() as conn:
        left = conn.execute(
            select(results.c.image_data).where(results.c.image_uuid == image_uuid)
        ).scalar_one()
    assert left is None
    copier.close()


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("/img/not-an-image", "decode"),
        ("/img/wrong-size", "size"),
        ("/img/too-large", "too_large"),
        ("off-list", "host"),
    ],
)
def test_a_hostile_image_is_refused_counted_and_nothing_is_written(
    store: JobStore,
    settings: Settings,
    results_store: ResultsStore,
    image_host: str,
    where: str,
    reason: str,
) -> None:
    copier = Copier(settings, store.engine, results_store)
    # `localhost` names the same server, but only its 127.0.0.1 origin is on the list
    url = image_host.replace("127.0.0.1", "localhost") + "/img/good"
    key = _recorded(store, url=url if where == "off-list" else image_host + where)
    refused_before = _count("image_copy_failures_total", reason=reason)

    [copied] = copier.copy_all([key])

    assert (copied.kept, copied.reason, copied.retry_in_s) == (None, reason, None)
    [state] = copier.copies.of_job(copied.order.job_id).values()
    assert (state.failure_reason, state.given_up, state.key) == (reason, True, None)
    assert _count("image_copy_failures_total", reason=reason) == refused_before + 1
    assert results_store.head(f"images/{copied.order.job_id}/{key[1]}.png") is None
    # given up on: neither a later message nor the reaper copies it again
    assert copier.copy_all([key]) == []
    assert copier.copies.not_stored(store._clock()) == []
    copier.close()


def test_storage_down_is_retried_with_backoff_and_the_image_lands_once_it_is_back(
    store: JobStore, settings: Settings, image_host: str, moto_s3: MotoS3
) -> None:
    down = Settings(
        **moto_s3.settings(settings, prefix="down").model_dump()
        | {"results_url": f"s3://b/p?endpoint=http://127.0.0.1:{free_port()}&addressing=path"}
    )
    key = _recorded(store, url=f"{image_host}/img/good")
    failing = Copier(down, store.engine)

    first, second = failing.copy_all([key]) + failing.copy_all([key])

    assert (first.reason, second.reason) == ("storage", "storage")
    assert first.retry_in_s is not None
    assert second.retry_in_s is not None
    [state] = failing.copies.of_job(first.order.job_id).values()
    assert (state.attempts, state.given_up, state.key) == (2, False, None)
    up = open_results_store(moto_s3.settings(settings, prefix=f"up-{uuid.uuid4().hex[:8]}"))
    recovered = Copier(settings, store.engine, up)
    [copied] = recovered.copy_all([key])
    assert copied.kept is not None
    assert up.get(copied.kept.key) == IMAGES["good"][0]
    failing.close()
    recovered.close()


def test_an_image_host_failing_is_retried_while_the_url_lives(
    store: JobStore, settings: Settings, image_host: str
) -> None:
    copier = Copier(settings, store.engine)
    key = _recorded(store, url=f"{image_host}/img/failing")

    [copied] = copier.copy_all([key])

    assert (copied.reason, copied.kept) == ("status", None)
    assert copied.retry_in_s is not None
    [state] = copier.copies.of_job(copied.order.job_id).values()
    assert state.given_up is False
    copier.close()


def test_a_url_past_runwares_ttl_is_given_up_on_as_expired(
    store: JobStore, settings: Settings, image_host: str
) -> None:
    key = _recorded(store, url=f"{image_host}/img/failing")
    # its result arrived longer than the ttl ago: a retry could only find the URL gone
    with store.engine.begin() as conn:
        conn.execute(
            results.update()
            .where(results.c.image_uuid == key[1])
            .values(received_at=store._clock().replace(year=2000))
        )
    copier = Copier(settings, store.engine)

    [copied] = copier.copy_all([key])

    assert (copied.reason, copied.retry_in_s) == ("expired", None)
    copier.close()


def test_results_not_stored_are_found_for_the_reaper_until_kept(
    store: JobStore, settings: Settings, image_host: str
) -> None:
    copier = Copier(settings, store.engine)
    key = _recorded(store, url=f"{image_host}/img/good")
    later = store._clock().replace(year=2100)

    assert copier.copies.not_stored(later) == [key]
    copier.copy_all([key])
    assert copier.copies.not_stored(later) == []
    copier.close()


def _submitted(store: JobStore, urls: list[str], callback_url: str | None = None) -> Job:
    """A submitted job of len(urls) images, each recorded with its URL."""
    params: dict[str, Any] = {
        "positivePrompt": "a copper kettle",
        "width": WIDTH,
        "height": HEIGHT,
        "outputFormat": "PNG",
        "numberResults": len(urls),
    }
    [(job, _)] = store.create_jobs(
        [NewJob(params, callback_url=callback_url)], tenant="acme", deadline_s=600
    )
    assert store.claim(job.id, 0) is not None
    assert store.mark_submitted(job.id, {})
    store.record_results(
        [
            IncomingResult(job.task_uuid, f"img-{n}", url, None, 7, Decimal("0.02"), False)
            for n, url in enumerate(urls)
        ],
        "webhook",
    )
    return store.get(job.id)


def _keys(job: Job) -> list[tuple[str, str]]:
    return [(job.task_uuid, f"img-{n}") for n in range(job.number_results)]


def test_a_job_succeeds_when_its_last_image_is_stored_and_its_callback_carries_every_copy(
    store: JobStore, settings: Settings, results_store: ResultsStore, image_host: str
) -> None:
    copier = Copier(settings, store.engine, results_store, observers=store.observers)
    job = _submitted(store, [f"{image_host}/img/good"] * 2, "https://hooks.example.com/done")
    first, last = _keys(job)

    copier.copy_all([first])
    waiting = store.get(job.id)
    # every result is in and one image is kept: the job is still submitted, its view says so
    assert (waiting.state, waiting.images_received) == (JobState.SUBMITTED, 2)
    assert [i["stored"] for i in JobView.from_job(waiting).model_dump()["images"]] == [True, False]
    assert CallbackOutbox(store.engine).get(job.id) is None
    copier.copy_all([last])

    done = store.get(job.id, details=True)
    assert done.state is JobState.SUCCEEDED
    assert (done.events[-1].kind, done.events[-1].detail) == ("completed", {"images": 2})
    # the callback event was written with the transition; its body, built from the job
    # as stored, carries each image's durable URL, sha256 and size
    event = CallbackOutbox(store.engine).get(job.id)
    assert event is not None
    assert event.type == "job.succeeded"
    view = JobView.from_job(done, lambda key: results_store.url(key, 60))
    digest = hashlib.sha256(IMAGES["good"][0]).hexdigest()
    for image in view.model_dump(mode="json")["images"]:
        assert (image["stored"], image["sha256"], image["bytes"]) == (
            True,
            digest,
            len(IMAGES["good"][0]),
        )
        assert image["url"] is not None
        if results_store.kind == "s3":  # presigned; the directory's are served by `web`
            assert httpx.get(image["url"], timeout=10).content == IMAGES["good"][0]
    copier.close()


def test_a_refused_image_fails_its_job_as_storage_once_every_image_is_settled(
    store: JobStore, settings: Settings, results_store: ResultsStore, image_host: str
) -> None:
    copier = Copier(settings, store.engine, results_store, observers=store.observers)
    urls = [f"{image_host}/img/good", f"{image_host}/img/wrong-size", f"{image_host}/img/good"]
    job = _submitted(store, urls)
    good, refused, other = _keys(job)

    copier.copy_all([good, refused])
    # one image is still to be copied: the refusal alone does not end the job yet
    assert store.get(job.id).state is JobState.SUBMITTED
    copier.copy_all([other])

    failed = store.get(job.id, details=True)
    assert (failed.state, failed.failure_reason) == (JobState.FAILED, "storage")
    assert failed.failure_message == "1 of 3 images not stored: img-1: size"
    assert failed.events[-1].detail["reason"] == "storage"
    # Runware billed all three; the two stored stay kept and served
    assert failed.cost_usd == Decimal("0.06")
    kept = [image for image in failed.images if image.storage_key is not None]
    assert [image.image_uuid for image in kept] == ["img-0", "img-2"]
    assert all(results_store.get(image.storage_key or "") == IMAGES["good"][0] for image in kept)
    copier.close()
