"""Collects each chaos scenario's figures and prints them as README's reliability table."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from _pytest.terminal import TerminalReporter

from core.settings import Settings
from fluxfarm.processes import Child, Farm, free_port
from tests.integration.chaos.harness import ChaosResult
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


@dataclass
class PrivateRedis:
    """A Redis of the test's own (no persistence): restarting it disturbs nobody else."""

    servers: Farm
    port: int
    argv: list[str]
    server: Child | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.server = self.servers.spawn("redis", self.argv)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                redis.Redis(port=self.port).ping()
                return
            time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def restart(self) -> None:
        if self.server is not None:
            self.servers.kill(self.server)
        time.sleep(3)
        self.start()


@pytest.fixture
def redis_broker(tmp_path: Path) -> Iterator[PrivateRedis]:
    port = free_port()
    argv = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]
    with Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "redis-logs") as servers:
        private = PrivateRedis(servers, port, argv)
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
