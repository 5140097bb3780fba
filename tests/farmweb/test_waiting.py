"""GET /v1/jobs/{id}?wait= against a real web: held until the job is terminal, answered
the moment it is, bounded, and only for the caller's own jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from farmdomain.settings import Settings
from fluxfarm.processes import Farm, free_port
from jobstore.migrations import upgrade

pytestmark = pytest.mark.integration

REQUEST = {"request": {"positivePrompt": "a lighthouse", "width": 512, "height": 512}}


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    """A web with no worker: its jobs stay queued until canceled."""
    settings = Settings(data_dir=tmp_path, webhook_secret="waiting-secret")
    upgrade(settings.resolved_database_url())
    with Farm(settings, log_dir=tmp_path / "logs") as farm:
        yield farm.start_web(free_port())


def _submit(web: str) -> str:
    created = httpx.post(f"{web}/v1/jobs", json=REQUEST, timeout=10)
    assert created.status_code == 201, created.text
    job_id: str = created.json()["id"]
    return job_id


def test_a_held_request_is_answered_when_its_job_turns_terminal(web: str) -> None:
    job_id = _submit(web)
    answered: list[tuple[float, httpx.Response]] = []

    def hold() -> None:
        started = time.monotonic()
        response = httpx.get(f"{web}/v1/jobs/{job_id}", params={"wait": 30}, timeout=40)
        answered.append((time.monotonic() - started, response))

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(1.0)
    assert not answered  # still held: the job is queued
    assert httpx.post(f"{web}/v1/jobs/{job_id}/cancel", timeout=10).status_code == 200
    holder.join(40)

    [(held_s, response)] = answered
    assert response.status_code == 200
    assert response.json()["state"] == "canceled"
    assert held_s < 30  # answered by the transition, not by the end of the wait


def test_a_wait_ends_with_the_job_as_it_stands_and_is_bounded(web: str) -> None:
    job_id = _submit(web)
    started = time.monotonic()
    response = httpx.get(f"{web}/v1/jobs/{job_id}", params={"wait": 0.5}, timeout=10)
    assert response.status_code == 200
    assert response.json()["state"] == "queued"
    assert time.monotonic() - started >= 0.5

    too_long = httpx.get(f"{web}/v1/jobs/{job_id}", params={"wait": 61}, timeout=10)
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["field"] == "wait"
    assert httpx.get(f"{web}/v1/jobs/nope", params={"wait": 5}, timeout=10).status_code == 404

    httpx.post(f"{web}/v1/jobs/{job_id}/cancel", timeout=10)
    started = time.monotonic()
    done = httpx.get(f"{web}/v1/jobs/{job_id}", params={"wait": 30}, timeout=40)
    assert done.json()["state"] == "canceled"
    assert time.monotonic() - started < 30  # terminal already: not held at all
