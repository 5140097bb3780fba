"""Connecting to the store: the URL made canonical and an engine from its dialect."""

from __future__ import annotations

from sqlalchemy import Engine

from jobstore import dialects

# connections a process keeps open to PostgreSQL unless its settings say otherwise
DEFAULT_POOL_SIZE = 10


def normalize_database_url(url: str) -> str:
    """Pin PostgreSQL URLs to psycopg 3, the one driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def make_engine(url: str, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """An engine with the connection behaviour the URL's database needs under concurrency."""
    url = normalize_database_url(url)
    return dialects.for_url(url).make_engine(url, pool_size)
