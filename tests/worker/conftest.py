"""Worker fixtures: apps and contexts built from settings each test makes, a simulator."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from farmdomain.callbacks import new_secret
from farmdomain.settings import Settings
from imagestore import ResultsStore, open_results_store
from jobstore.migrations import upgrade
from jobstore.store import JobStore
from simulator.testing import SimulatorHandle, running_simulator
from tests.http_servers import serve_asgi
from tests.s3server import MotoS3
from worker.app import create_app
from worker.context import WorkerContext


@pytest.fixture(params=["directory", "s3"])
def results_store(request: pytest.FixtureRequest, settings: Settings) -> ResultsStore:
    """The results store of the test's `settings`: its directory, or a prefix of its own
    in moto's S3 server."""
    if request.param == "s3":
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        return open_results_store(moto.settings(settings, prefix=f"t-{uuid.uuid4().hex[:8]}"))
    return open_results_store(settings)


@pytest.fixture
def store(settings: Settings) -> Iterator[JobStore]:
    """The job store of the test's `settings`."""
    found = JobStore.from_settings(settings)
    yield found
    found.engine.dispose()


@pytest.fixture
def sim() -> Iterator[SimulatorHandle]:
    with running_simulator() as handle:
        yield handle


@pytest.fixture
def contexts(tmp_path: Path, sim: SimulatorHandle) -> Iterator[Callable[[bool], WorkerContext]]:
    """Worker contexts on a fresh SQLite store with the simulator as Runware; the argument
    says whether the daily budget ($0.10) is enforced."""
    made: list[WorkerContext] = []

    def make(enforce: bool) -> WorkerContext:
        settings = Settings(
            data_dir=tmp_path,
            runware_url=sim.api_url,
            runware_api_key="sim-key",
            webhook_secret="budget-secret",
            enforce_daily_budget=enforce,
            spend_daily_budget_usd=0.10,
        )
        upgrade(settings.resolved_database_url())
        made.append(create_app(settings).context)
        return made[-1]

    yield make
    for context in made:
        context.close()


# 1536 x 1024 is 1.5 megapixels, rounded up to 2: $0.045 a job, as in the seed's example
PARAMS: dict[str, Any] = {"positivePrompt": "a salt cathedral", "width": 1536, "height": 1024}


def queued_jobs(context: WorkerContext, count: int, params: dict[str, Any] = PARAMS) -> list[str]:
    """The ids of `count` new queued jobs of tenant acme."""
    return [
        context.store.create_job(params, tenant="acme", deadline_s=600)[0].id for _ in range(count)
    ]


SECRET = new_secret()


@dataclass
class Receiver:
    """A service's endpoints: /hook verifies each callback with the reference library under
    `secret`; the others are hostile (gone, broken, redirecting, slow, trickling, huge)."""

    secret: str = SECRET
    verified: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.hits.append(request.url.path)
            raw = await request.body()
            try:
                payload = Webhook(self.secret).verify(raw, dict(request.headers))
            except WebhookVerificationError as exc:
                self.refused.append(str(exc))
                return JSONResponse({"error": str(exc)}, 400)
            self.verified.append(payload)
            return JSONResponse({"ok": True})

        async def gone(_: Request) -> Response:
            return Response(status_code=410)

        async def broken(_: Request) -> Response:
            return Response("database is down " * 100, status_code=500)

        async def redirect(_: Request) -> Response:
            return Response(status_code=307, headers={"Location": "/hook"})

        async def slow(_: Request) -> Response:
            await asyncio.sleep(5)
            return Response("late")

        async def trickle(_: Request) -> Response:
            async def drip() -> AsyncIterator[bytes]:
                for _ in range(100):
                    yield b"."
                    await asyncio.sleep(0.1)

            return StreamingResponse(drip())

        async def huge(_: Request) -> Response:
            return Response(b"x" * 10_000_000)

        routes = [("/hook", hook), ("/gone", gone), ("/broken", broken)]
        routes += [("/redirect", redirect), ("/slow", slow), ("/trickle", trickle)]
        routes += [("/huge", huge)]
        return Starlette(routes=[Route(path, run, methods=["POST"]) for path, run in routes])


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    found = Receiver()
    with serve_asgi(found.app()) as url:
        yield found, url
