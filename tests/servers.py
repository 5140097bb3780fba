"""Throwaway databases on a PostgreSQL server, for benchmarks and tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from jobstore.migrations import upgrade


@contextmanager
def fresh_postgres_database(server_url: str, prefix: str = "fluxfarm_t_") -> Iterator[str]:
    """A migrated database of its own on the server at `server_url`; dropped afterwards."""
    admin = server_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
