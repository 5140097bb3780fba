"""Worker fixtures: the Celery app imported under test settings, once per session."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

import pytest

from core.settings import get_settings


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
