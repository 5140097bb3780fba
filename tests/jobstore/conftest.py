"""Core fixtures: a migrated store on SQLite (a tmp file) and on a throwaway PostgreSQL database."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from jobstore.copies import Kept, ResultCopies
from jobstore.engine import make_engine
from jobstore.migrations import upgrade
from jobstore.schema import results
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


def copies_of(store: JobStore, clock: Clock | None = None) -> ResultCopies:
    """The copy rows of `store`, telling its observers of the jobs a copy makes terminal."""
    return ResultCopies(store.engine, clock or store._clock, observers=store.observers)


def keep_images(store: JobStore, job_id: str, clock: Clock | None = None) -> int:
    """Record every received image of the job as kept in the results store, as the copy
    task does once it wrote one; how many this call recorded."""
    with store.engine.connect() as conn:
        keys = [
            (row.task_uuid, row.image_uuid)
            for row in conn.execute(
                select(results.c.task_uuid, results.c.image_uuid).where(results.c.job_id == job_id)
            )
        ]
    copies = copies_of(store, clock)
    return sum(
        copies.stored(order, kept_image(order.job_id, order.image_uuid))
        for order in copies.orders(keys)
    )


def kept_image(job_id: str, image_uuid: str) -> Kept:
    return Kept(f"images/{job_id}/{image_uuid}.jpg", "ab" * 32, 1234, "image/jpeg")


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
        conn.execute(text("TRUNCATE results, events, jobs, tenant_retention CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[JobStore]:
    job_store = JobStore(make_engine(store_url), clock=clock)
    yield job_store
    job_store.engine.dispose()
