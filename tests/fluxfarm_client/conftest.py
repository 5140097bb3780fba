"""A real farm for the client to talk to: simulator, web under uvicorn, a worker, beat;
and a web alone (no worker: its jobs stay queued) with settings of a test's own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from farmdomain.settings import Settings
from fluxfarm.processes import Farm, free_port, start_pipeline
from jobstore.api_tokens import ApiTokenStore
from jobstore.migrations import upgrade
from jobstore.store import JobStore

SIMULATOR_KEY = "client-suite-key"
REQUEST = {"positivePrompt": "a lighthouse at dusk", "width": 512, "height": 512}


@dataclass
class RunningWeb:
    """A web process and the store behind it."""

    url: str
    settings: Settings
    store: JobStore

    def token(self, tenant: str = "acme", *, can_write: bool = True) -> str:
        _record, token = ApiTokenStore(self.store.engine).create(
            tenant, f"{tenant} service", can_write=can_write
        )
        return token

    def job_count(self) -> int:
        return sum(self.store.count_by_state().values())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWeb]:
    tmp = tmp_path_factory.mktemp("farm")
    with Farm(Settings(data_dir=tmp), log_dir=tmp / "logs") as farm:
        running = start_pipeline(
            farm,
            api_key=SIMULATOR_KEY,
            simulator_flags=("--fast-images",),
            webhook_secret="client-suite-secret",
        )
        store = JobStore.from_settings(running.settings)
        yield RunningWeb(running.web_url, running.settings, store)
        store.engine.dispose()


WebFactory = Callable[..., RunningWeb]


@pytest.fixture
def bare_web(tmp_path: Path) -> Iterator[WebFactory]:
    """Start a web with `overrides` on top of a fresh data directory; no worker runs."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> RunningWeb:
            port = free_port()
            settings = Settings(
                data_dir=tmp_path / "data",
                public_base_url=f"http://127.0.0.1:{port}",
                webhook_secret="client-suite-secret",
                **overrides,
            )
            upgrade(settings.resolved_database_url())
            farm = stack.enter_context(Farm(settings, log_dir=tmp_path / "logs"))
            url = farm.start_web(port)
            store = JobStore.from_settings(settings)
            stack.callback(store.engine.dispose)
            return RunningWeb(url, settings, store)

        yield start


def job_json(job_id: str, images: list[dict[str, Any]]) -> dict[str, Any]:
    """A succeeded job as the farm's API shows it, with `images` over the defaults."""
    at = "2030-01-01T00:00:00+00:00"
    return {
        "id": job_id,
        "state": "succeeded",
        "taskUUID": "2b8f0a52-3d4e-4a9e-9f0a-0d1c2b3a4f5e",
        "tenant": "acme",
        "numberResults": len(images),
        "imagesReceived": len(images),
        "costUsd": "0.03",
        "estimatedCostUsd": "0.03",
        "attempts": 1,
        "createdAt": at,
        "updatedAt": at,
        "deadlineAt": at,
        "claimedAt": at,
        "submittedAt": at,
        "finishedAt": at,
        "request": {"positivePrompt": "p", "width": 512, "height": 512},
        "failure": None,
        "retryOf": None,
        "images": [
            {
                "imageUUID": f"img-{i}",
                "imageURL": None,
                "seed": 1,
                "costUsd": "0.015",
                "nsfw": False,
                "source": "webhook",
                "late": False,
                "receivedAt": at,
                "hasInlineData": False,
                **image,
            }
            for i, image in enumerate(images)
        ],
        "events": [],
    }
