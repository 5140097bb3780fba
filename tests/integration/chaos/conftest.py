"""The servers the chaos scenarios break, each test's own, and the scenarios' report."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.integration.chaos.table import ROW_PROPERTY
from tests.private_servers import (
    PrivatePostgres,
    PrivateRabbitMQ,
    PrivateRedis,
    running,
    server_dir,
)


@pytest.fixture
def report(record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """Adds a scenario's row to the reliability table (see tests/integration/chaos/table.py)."""
    return lambda row: record_property(ROW_PROPERTY, row)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    with server_dir("postgres") as directory:
        server = PrivatePostgres(directory)
        with running(server):
            yield server


@pytest.fixture
def postgres(private_postgres: PrivatePostgres) -> str:
    """A migrated database on the test's own PostgreSQL."""
    return private_postgres.create_database()


@pytest.fixture
def redis_broker() -> Iterator[PrivateRedis]:
    with server_dir("redis") as directory:
        server = PrivateRedis(directory)
        with running(server):
            yield server


@pytest.fixture
def rabbitmq_broker() -> Iterator[PrivateRabbitMQ]:
    with server_dir("rabbitmq") as directory:
        server = PrivateRabbitMQ(directory, "chaos")
        with running(server):
            yield server
