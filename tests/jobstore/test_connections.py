"""Store connections under a network that fails them: each carries libpq's keepalive and
TCP timeouts, so a statement sent to a PostgreSQL cut off the network fails instead of
waiting for as long as the kernel retransmits, and the URL can set each of them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, TextClause, text
from sqlalchemy.exc import OperationalError

from jobstore.dialects.postgresql import CONNECTION_DEFAULTS
from jobstore.engine import make_engine
from tests.hosts import Network, network, unavailable_reason
from tests.private_servers import PrivatePostgres, running, server_dir
from tests.services import POSTGRES_URL

pytestmark = pytest.mark.integration

# the timeouts a test can wait out: two lost keepalives a second apart, 2 s unacknowledged
FAST_TIMEOUTS = "keepalives_idle=1&keepalives_interval=1&keepalives_count=2&tcp_user_timeout=2000"


def _parameters(url: str) -> dict[str, str]:
    engine = make_engine(url)
    try:
        connection = engine.raw_connection()
        try:
            driver: Any = connection.driver_connection
            found: dict[str, str] = driver.info.get_parameters()
        finally:
            connection.close()
    finally:
        engine.dispose()
    return {name: found[name] for name in CONNECTION_DEFAULTS}


def test_connections_carry_the_timeouts_unless_the_url_sets_them() -> None:
    assert _parameters(POSTGRES_URL) == CONNECTION_DEFAULTS
    separator = "&" if "?" in POSTGRES_URL else "?"
    chosen = _parameters(f"{POSTGRES_URL}{separator}keepalives_idle=5&tcp_user_timeout=3000")
    assert chosen == CONNECTION_DEFAULTS | {"keepalives_idle": "5", "tcp_user_timeout": "3000"}


def _read(engine: Engine, query: TextClause) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


@pytest.fixture
def cut_off_store() -> Iterator[tuple[Network, str]]:
    """A PostgreSQL on a host of its own, which the test may cut off the network."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no test hosts: {reason}")
    with server_dir("cut-store") as directory, network(["store"]) as net:
        postgres = PrivatePostgres(directory / "postgres", net["store"].place)
        with running(postgres):
            yield net, postgres.url


def test_a_statement_to_a_store_cut_off_the_network_fails_and_the_pool_reconnects(
    cut_off_store: tuple[Network, str],
) -> None:
    net, url = cut_off_store
    engine = make_engine(f"{url}?{FAST_TIMEOUTS}")
    outcome: list[BaseException | None] = []

    def long_statement() -> None:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_sleep(60)"))
        except OperationalError as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    running_statement = threading.Thread(target=long_statement)
    running_statement.start()
    sleeping = text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'")
    # a transaction of its own each time: pg_stat_activity is read once per transaction
    while not _read(engine, sleeping):
        time.sleep(0.05)
    net.cut("store")
    # far beyond the timeouts, far short of the statement: only they can end it
    running_statement.join(30)
    try:
        assert outcome, "the statement was still waiting on the cut-off store"
        assert isinstance(outcome[0], OperationalError)
        net.reconnect("store")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        net.reconnect("store")
        running_statement.join()
        engine.dispose()
