"""Fleet-wide leases: one holder at a time of a named duty (the reaper's pass), across
every process on every host, with an expiry so that a holder that dies frees it.

A lease row is taken by one conditional UPDATE (free, expired, or already ours) and, the
first time a name is used, by an INSERT that only one contender can win (the primary
key); both dialects run the same statements.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from farmdomain.values import utcnow
from jobstore.schema import leases
from jobstore.statements import translated_errors


@dataclass(frozen=True)
class Lease:
    """A lease as the store holds it; `finished_at` is when its last holder gave it back."""

    name: str
    holder: str
    expires_at: datetime
    finished_at: datetime | None


class Leases:
    """The leases table."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self._clock = clock

    def take(self, name: str, holder: str, ttl_s: float) -> bool:
        """Hold `name` for `ttl_s` from now; False if another holder has it unexpired."""
        now = self._clock()
        expires = now + timedelta(seconds=ttl_s)
        with translated_errors(), self.engine.begin() as conn:
            taken = conn.execute(
                update(leases)
                .where(
                    leases.c.name == name,
                    or_(leases.c.expires_at <= now, leases.c.holder == holder),
                )
                .values(holder=holder, expires_at=expires)
            ).rowcount
            if taken:
                return True
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(leases).values(name=name, holder=holder, expires_at=expires)
                    )
            except IntegrityError:
                return False
            return True

    def give_back(self, name: str, holder: str) -> None:
        """End `holder`'s lease on `name` now, if it still holds it."""
        now = self._clock()
        with translated_errors(), self.engine.begin() as conn:
            conn.execute(
                update(leases)
                .where(leases.c.name == name, leases.c.holder == holder)
                .values(expires_at=now, finished_at=now)
            )

    def get(self, name: str) -> Lease | None:
        with translated_errors(), self.engine.connect() as conn:
            row = conn.execute(select(leases).where(leases.c.name == name)).first()
        if row is None:
            return None
        return Lease(row.name, row.holder, row.expires_at, row.finished_at)
