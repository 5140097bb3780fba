"""Core fixtures: a migrated store on SQLite (a tmp file) and on a throwaway PostgreSQL database."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core.migrate import upgrade
from core.store import JobStore
from core.tables import make_engine

POSTGRES_SERVER_URL = os.environ.get(
    "FLUXFARM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


class Clock:
    """A store clock the test moves by hand, so time-based queries need no sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A uniquely named database, migrated, dropped at the end of the session."""
    server = make_url(POSTGRES_SERVER_URL)
    name = f"fluxfarm_t_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(_libpq(POSTGRES_SERVER_URL), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {server.host}:{server.port}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        url = server.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
        try:
            upgrade(url)
            yield url
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file that each test copies, so Alembic runs once per session."""
    path = tmp_path_factory.mktemp("template") / "jobs.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, migrated_sqlite: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "jobs.sqlite"
        shutil.copyfile(migrated_sqlite, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE results, events, jobs"))
    engine.dispose()
    return url


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[JobStore]:
    job_store = JobStore(make_engine(store_url), clock=clock)
    yield job_store
    job_store.engine.dispose()
