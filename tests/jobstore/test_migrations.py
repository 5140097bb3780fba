"""Migrations down and up again: every trigger the store relies on is back, on both
dialects (a rebuilt SQLite table loses its triggers unless a migration avoids rebuilding)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from jobstore.engine import make_engine
from jobstore.migrations import alembic_config, upgrade
from tests.services import fresh_postgres_database

TRIGGERS = {"jobs_callback_event", "jobs_capacity_release", "jobs_capacity_release_received"}
_LIST = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
    "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.sqlite'}"
        return
    with fresh_postgres_database() as url:
        yield url


def _triggers(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(text(_LIST[engine.dialect.name]))}
    finally:
        engine.dispose()


def test_down_to_before_the_triggers_and_up_again_keeps_each_trigger(database_url: str) -> None:
    upgrade(database_url)
    assert _triggers(database_url) >= TRIGGERS

    command.downgrade(alembic_config(database_url), "0005_callback_events")
    assert _triggers(database_url) & TRIGGERS == {"jobs_callback_event"}
    command.downgrade(alembic_config(database_url), "0004_result_copies")
    assert _triggers(database_url) & TRIGGERS == set()
    upgrade(database_url)

    assert _triggers(database_url) >= TRIGGERS
