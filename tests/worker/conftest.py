"""Worker fixtures: apps and contexts built from settings each test makes, a simulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from farmdomain.settings import Settings
from jobstore.migrations import upgrade
from simulator.testing import SimulatorHandle, running_simulator
from worker.app import create_app
from worker.context import WorkerContext


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
