"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, polled quickly."""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as SqlAlchemyTransport

ALIAS = "fluxfarm-sqlite"


class Transport(SqlAlchemyTransport):
    # kombu passes every transport option on to create_engine(), which rejects
    # `polling_interval`, so the faster poll is set on the class instead of as an option
    polling_interval = 0.05


def register() -> None:
    """Make `fluxfarm-sqlite+sqlite:///PATH` broker URLs resolve to this transport."""
    TRANSPORT_ALIASES.setdefault(ALIAS, f"{__name__}:Transport")
