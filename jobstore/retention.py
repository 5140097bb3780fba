"""Retention of result images: how many days each tenant's are kept (the farm's
FLUXFARM_RESULTS_RETENTION_DAYS unless the tenant has its own), the images past it, and
the mark each one gets once deleted from the results store.

A tenant's own figure is a row of `tenant_retention`, a table of its own: other tenant
settings live elsewhere and change for other reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, and_, false, or_, select, tuple_, update

from farmdomain.values import utcnow
from jobstore import dialects
from jobstore.copies import ResultKey
from jobstore.schema import jobs, result_copies, tenant_retention
from jobstore.statements import translated_errors


@dataclass(frozen=True)
class Expired:
    """A kept image past its tenant's retention."""

    task_uuid: str
    image_uuid: str
    key: str


class Retention:
    """The retention rows and the copies they expire, on the store's `engine`."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self._clock = clock

    def set_days(self, tenant: str, days: int) -> None:
        """Keep the tenant's images `days` days from now on (0: for ever)."""
        now = self._clock()
        statement = (
            dialects.of(self.engine)
            .insert(tenant_retention)
            .values(tenant=tenant, days=days, updated_at=now)
        )
        statement = statement.on_conflict_do_update(
            index_elements=[tenant_retention.c.tenant], set_={"days": days, "updated_at": now}
        )
        with translated_errors(), self.engine.begin() as conn:
            conn.execute(statement)

    def own_days(self) -> dict[str, int]:
        """The tenants with a retention of their own, and theirs."""
        query = select(tenant_retention.c.tenant, tenant_retention.c.days)
        with translated_errors(), self.engine.connect() as conn:
            return {row.tenant: row.days for row in conn.execute(query)}

    def days_of(self, tenant: str, default_days: int) -> int:
        return self.own_days().get(tenant, default_days)

    def expired(self, default_days: int, now: datetime, limit: int) -> list[Expired]:
        """Up to `limit` kept images stored longer ago than their tenant's retention,
        oldest first; `default_days` for tenants without their own (0: for ever)."""
        own = self.own_days()
        query = (
            select(
                result_copies.c.task_uuid, result_copies.c.image_uuid, result_copies.c.storage_key
            )
            .join(jobs, jobs.c.id == result_copies.c.job_id)
            .where(
                result_copies.c.stored_at.is_not(None),
                result_copies.c.deleted_at.is_(None),
                _past_retention(own, default_days, now),
            )
            .order_by(result_copies.c.stored_at)
            .limit(limit)
        )
        with translated_errors(), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Expired(row.task_uuid, row.image_uuid, row.storage_key) for row in rows]

    def mark_deleted(self, keys: Sequence[ResultKey]) -> int:
        """Record that the images of `keys` are gone from the results store; how many
        this call marked."""
        if not keys:
            return 0
        now = self._clock()
        statement = (
            update(result_copies)
            .where(
                tuple_(result_copies.c.task_uuid, result_copies.c.image_uuid).in_(list(keys)),
                result_copies.c.deleted_at.is_(None),
            )
            .values(deleted_at=now, updated_at=now)
        )
        with translated_errors(), self.engine.begin() as conn:
            return conn.execute(statement).rowcount


def _past_retention(own: dict[str, int], default_days: int, now: datetime) -> ColumnElement[bool]:
    """Stored before the cutoff of its tenant: its own retention, else the farm's."""

    def older_than(days: int) -> ColumnElement[bool]:
        return result_copies.c.stored_at < now - timedelta(days=days)

    conditions = [
        and_(jobs.c.tenant == tenant, older_than(days)) for tenant, days in own.items() if days
    ]
    if default_days:
        conditions.append(and_(jobs.c.tenant.not_in(list(own)), older_than(default_days)))
    # nothing at all when every retention keeps images for ever
    return or_(false(), *conditions)
