"""The machine's shared servers, isolated per test run: each pytest process (each xdist
worker too) gets databases, a RabbitMQ vhost and a Redis db of its own, named after its
run id, so that two runs at once never see each other's jobs or messages."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import redis

from tests import servers

POSTGRES_URL = os.environ.get(
    "FLUXFARM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# the server to use; the db and the vhost in these URLs are where the search starts and
# what the run's own vhost is named after
REDIS_URL = os.environ.get("FLUXFARM_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
AMQP_URL = os.environ.get("FLUXFARM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

RUN_ID = uuid.uuid4().hex[:10]
_CLAIM_TTL_S = 6 * 3600
_REDIS_DBS = 16


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A migrated, throwaway database on the test PostgreSQL server; dropped afterwards."""
    with servers.fresh_postgres_database(POSTGRES_URL, f"fluxfarm_t_{RUN_ID}_") as url:
        yield url


@contextmanager
def run_redis_db() -> Iterator[str]:
    """A Redis db nobody else is using, claimed for this run in db 0 and released after.

    Claims expire, so a run that was killed frees its db within hours."""
    parts = urlsplit(REDIS_URL)
    preferred = int(parts.path.strip("/") or 0)
    admin = redis.Redis.from_url(urlunsplit(parts._replace(path="/0")))
    order = [preferred, *range(_REDIS_DBS - 1, 0, -1)]
    try:
        db = next(
            n
            for n in dict.fromkeys(order)
            if n != 0 and admin.set(f"fluxfarm:test-db:{n}", RUN_ID, nx=True, ex=_CLAIM_TTL_S)
        )
    except StopIteration:
        raise RuntimeError(f"every Redis db 1-{_REDIS_DBS - 1} is claimed by a test run") from None
    url = urlunsplit(parts._replace(path=f"/{db}"))
    try:
        yield url
    finally:
        redis.Redis.from_url(url).flushdb()
        if admin.get(f"fluxfarm:test-db:{db}") == RUN_ID.encode():
            admin.delete(f"fluxfarm:test-db:{db}")
        admin.close()


@contextmanager
def run_rabbitmq_vhost(purpose: str = "") -> Iterator[str]:
    """A vhost of this run's own on the machine's RabbitMQ (made with rabbitmqctl, which
    must run as the rabbitmq user to hold the node's cookie), one per `purpose` (a queue
    declared with other arguments needs a vhost of its own); deleted afterwards."""
    parts = urlsplit(AMQP_URL)
    base = parts.path.strip("/") or "fluxfarm"
    vhost = f"{base}-t-{RUN_ID}" + (f"-{purpose}" if purpose else "")
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")
        yield urlunsplit(parts._replace(path=f"/{vhost}"))
    finally:
        rabbitmqctl("delete_vhost", vhost)


def rabbitmqctl(*args: str) -> str:
    """rabbitmqctl against the machine's node, as the user holding the node's cookie."""
    found = subprocess.run(
        ["rabbitmqctl", "-q", *args],
        check=True,
        capture_output=True,
        user="rabbitmq",
        env={"PATH": os.environ.get("PATH", ""), "HOME": "/var/lib/rabbitmq"},
        cwd="/var/lib/rabbitmq",
        text=True,
    )
    return found.stdout
