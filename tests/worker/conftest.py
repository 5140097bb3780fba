"""Worker fixtures: the Celery app imported under test settings, once per session."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from farmdomain.settings import Settings, get_settings
from jobstore.migrations import upgrade
from simulator.testing import SimulatorHandle, running_simulator
from worker.context import ProcessContext


@pytest.fixture(scope="session")
def worker_app(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """`worker.app`, configured from FLUXFARM_* at its import: set them first, import lazily.

    If another suite imported it earlier in this session, its configuration stands; tests
    read the broker URL from the app itself, so they work either way.
    """
    if "worker.app" not in sys.modules:
        data_dir = tmp_path_factory.mktemp("worker-app")
        with pytest.MonkeyPatch.context() as patch:
            for name in [n for n in os.environ if n.startswith("FLUXFARM_")]:
                if not name.startswith("FLUXFARM_TEST_"):
                    patch.delenv(name)
            patch.setenv("FLUXFARM_DATA_DIR", str(data_dir))
            get_settings.cache_clear()
            for module in ("worker.app", "worker.tasks", "worker.reaper"):
                importlib.import_module(module)
        get_settings.cache_clear()
    return importlib.import_module("worker.app")


@pytest.fixture
def sim() -> Iterator[SimulatorHandle]:
    with running_simulator() as handle:
        yield handle


@pytest.fixture
def contexts(tmp_path: Path, sim: SimulatorHandle) -> Iterator[Callable[[bool], ProcessContext]]:
    """Worker contexts on a fresh SQLite store with the simulator as Runware; the argument
    says whether the daily budget ($0.10) is enforced."""
    made: list[ProcessContext] = []

    def make(enforce: bool) -> ProcessContext:
        settings = Settings(
            data_dir=tmp_path,
            runware_url=sim.api_url,
            runware_api_key="sim-key",
            webhook_secret="budget-secret",
            enforce_daily_budget=enforce,
            spend_daily_budget_usd=0.10,
        )
        upgrade(settings.resolved_database_url())
        made.append(ProcessContext(settings))
        return made[-1]

    yield make
    for context in made:
        context.runware.close()
        context.store.engine.dispose()


# 1536 x 1024 is 1.5 megapixels, rounded up to 2: $0.045 a job, as in the seed's example
PARAMS: dict[str, Any] = {"positivePrompt": "a salt cathedral", "width": 1536, "height": 1024}


def queued_jobs(context: ProcessContext, count: int, params: dict[str, Any] = PARAMS) -> list[str]:
    """The ids of `count` new queued jobs of tenant acme."""
    return [
        context.store.create_job(params, tenant="acme", deadline_s=600)[0].id for _ in range(count)
    ]
