"""Shared pytest configuration: every test starts from settings it builds itself, on
shared servers isolated per run."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import redis
import structlog
from _pytest.terminal import TerminalReporter
from kombu import Connection
from structlog.typing import EventDict

from farmdomain.broker import SUBMIT_QUEUE
from farmdomain.settings import get_settings
from tests import services
from tests.integration.chaos import table as chaos_table


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


@pytest.fixture(scope="session")
def _run_redis_db() -> Iterator[str]:
    with services.run_redis_db() as url:
        yield url


@pytest.fixture
def redis_url(_run_redis_db: str) -> str:
    """This run's Redis db on the machine's server, emptied for the test."""
    redis.Redis.from_url(_run_redis_db).flushdb()
    return _run_redis_db


@pytest.fixture(scope="session")
def _run_rabbitmq_vhost() -> Iterator[str]:
    with services.run_rabbitmq_vhost() as url:
        yield url


@pytest.fixture
def amqp_url(_run_rabbitmq_vhost: str) -> str:
    """This run's vhost on the machine's RabbitMQ, its submit queue emptied for the test."""
    with Connection(_run_rabbitmq_vhost) as conn:
        conn.SimpleQueue(SUBMIT_QUEUE).clear()
    return _run_rabbitmq_vhost


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    chaos_table.collect(report)


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    chaos_table.summarize(terminalreporter)
