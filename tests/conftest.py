"""Shared pytest configuration: every test starts from settings it builds itself."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import structlog
from structlog.typing import EventDict

from farmdomain.settings import get_settings


@pytest.fixture(autouse=True)
def _no_cached_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # tests pass Settings explicitly; a stray FLUXFARM_* variable must not leak in
    for name in [n for n in os.environ if n.startswith("FLUXFARM_")]:
        if not name.startswith("FLUXFARM_TEST_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def logs() -> Iterator[list[EventDict]]:
    """Every structlog line while the test runs, at any level whatever an earlier test
    configured, with the context variables bound where it was logged."""
    configured = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        processors = [structlog.contextvars.merge_contextvars]
        with structlog.testing.capture_logs(processors=processors) as lines:
            yield lines
    finally:
        structlog.configure(**configured)
