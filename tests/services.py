"""Connections to the real servers the tests use, each isolated per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from kombu import Connection

from farmdomain.broker import SUBMIT_QUEUE
from tests import servers as services

POSTGRES_URL = os.environ.get(
    "FLUXFARM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("FLUXFARM_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
AMQP_URL = os.environ.get("FLUXFARM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A migrated, throwaway database on the test PostgreSQL server; dropped afterwards."""
    with services.fresh_postgres_database(POSTGRES_URL) as url:
        yield url


def empty_redis() -> str:
    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL


def empty_rabbitmq() -> str:
    with Connection(AMQP_URL) as conn:
        conn.SimpleQueue(SUBMIT_QUEUE).clear()
    return AMQP_URL
