"""Schema migrations of the job store: the Alembic scripts beside this file, and upgrade."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from farmdomain.errors import ConfigurationError
from jobstore.engine import make_engine, normalize_database_url

MIGRATIONS = Path(__file__).parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalize_database_url(database_url))
    return config


def upgrade(database_url: str) -> None:
    """Bring the database to the newest schema; a no-op when it is already there."""
    command.upgrade(alembic_config(database_url), "head")


def require_current_schema(database_url: str) -> None:
    """Raise ConfigurationError unless the store answers with the newest schema, so a
    process never starts against a database it would misread."""
    config = alembic_config(database_url)
    head = ScriptDirectory.from_config(config).get_current_head()
    try:
        engine = make_engine(database_url)
        try:
            with engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        raise ConfigurationError(
            "FLUXFARM_DATABASE_URL", f"the store cannot be reached: {type(exc).__name__}"
        ) from exc
    if current != head:
        raise ConfigurationError(
            "FLUXFARM_DATABASE_URL",
            f"the store's schema is at {current or 'nothing'}, the code needs {head}: "
            "run `fluxfarm migrate`",
        )
