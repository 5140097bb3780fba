"""The one seam between PostgreSQL and SQLite: what the store does differently on each,
written once per dialect in that dialect's module, and chosen here by URL or connection.

Everything else in the store is one code path: SQLAlchemy Core statements both dialects
run as they are.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from farmdomain.errors import ConfigurationError
from jobstore.dialects.postgresql import POSTGRESQL
from jobstore.dialects.protocol import Dialect, Step
from jobstore.dialects.sqlite import SQLITE

__all__ = ["Dialect", "Step", "for_url", "of"]

_BY_NAME: dict[str, Dialect] = {"postgresql": POSTGRESQL, "sqlite": SQLITE}


def for_url(url: str) -> Dialect:
    """The dialect of a database URL (FLUXFARM_DATABASE_URL)."""
    scheme = url.partition(":")[0].partition("+")[0]
    if scheme not in _BY_NAME:
        raise ConfigurationError(
            "FLUXFARM_DATABASE_URL", f"{scheme!r} is not a store: use postgresql:// or sqlite://"
        )
    return _BY_NAME[scheme]


def of(bind: Connection | Engine) -> Dialect:
    """The dialect a connection or engine speaks."""
    return _BY_NAME[bind.dialect.name]
