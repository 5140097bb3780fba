"""Shared pytest configuration: every test starts from settings it builds itself."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from core.settings import get_settings


@pytest.fixture(autouse=True)
def _no_cached_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # tests pass Settings explicitly; a stray FLUXFARM_* variable must not leak in
    for name in [n for n in os.environ if n.startswith("FLUXFARM_")]:
        if not name.startswith("FLUXFARM_TEST_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
