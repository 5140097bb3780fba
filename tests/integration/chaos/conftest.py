"""Collects each chaos scenario's figures and prints them as README's reliability table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter

from farmdomain.settings import Settings
from fluxfarm.processes import Farm
from tests.integration.chaos.harness import ChaosResult
from tests.servers import PrivateRedis
from tests.services import empty_rabbitmq, fresh_postgres_database

_RESULTS: list[ChaosResult] = []
HEADER = (
    "| scenario | jobs | lost | paid twice | duplicate results | p99 time to terminal |\n"
    "|---|---|---|---|---|---|"
)


@pytest.fixture
def report() -> list[ChaosResult]:
    return _RESULTS


@pytest.fixture
def postgres() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def redis_broker(tmp_path: Path) -> Iterator[PrivateRedis]:
    with Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "redis-logs") as servers:
        private = PrivateRedis.on_free_port(servers, tmp_path)
        private.start()
        yield private


@pytest.fixture
def rabbitmq_broker() -> str:
    return empty_rabbitmq()


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not _RESULTS:
        return
    table = "\n".join([HEADER, *(result.row() for result in _RESULTS)])
    terminalreporter.write_sep("=", "chaos results")
    terminalreporter.write_line(table)
    target = Path(".fluxfarm/chaos-results.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(table + "\n")
