"""Alembic environment: migrates whichever database URL the caller configured."""

from __future__ import annotations

from alembic import context

from jobstore.engine import make_engine
from jobstore.schema import metadata

url = context.config.get_main_option("sqlalchemy.url")
if url is None:
    raise RuntimeError("sqlalchemy.url must be set by the caller")

engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
