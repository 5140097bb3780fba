"""Core fixtures: a migrated store on SQLite (a tmp file) and on a throwaway PostgreSQL database."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from jobstore.engine import make_engine
from jobstore.migrations import upgrade
from jobstore.store import JobStore
from tests.services import fresh_postgres_database


class Clock:
    """A store clock the test moves by hand, so time-based queries need no sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A uniquely named database, migrated, dropped at the end of the session.

    The drop opens a connection of its own: a held one would not survive the server
    restart that the chaos tests make mid-session."""
    with fresh_postgres_database() as url:
        yield url


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
        conn.execute(text("TRUNCATE results, events, jobs CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[JobStore]:
    job_store = JobStore(make_engine(store_url), clock=clock)
    yield job_store
    job_store.engine.dispose()
