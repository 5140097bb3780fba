"""The jobs waiting for admission, as the dispatcher reads them: the first few in line of
each tenant that has any, and the units each tenant holds."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Engine, func, literal_column, select, true, union_all

from farmdomain.admission import Waiting
from farmdomain.jobs import IN_FLIGHT_STATES, JobState
from jobstore.schema import jobs
from jobstore.statements import translated_errors

_WAITING = (jobs.c.state == JobState.QUEUED.value) & (jobs.c.attempts == 0)


def _waiting_tenants(conn: Connection) -> list[str]:
    """The tenants with a job waiting: one index probe per tenant (a loose index scan of
    ix_jobs_waiting), however many jobs wait."""
    first = select(func.min(jobs.c.tenant).label("tenant")).where(_WAITING)
    found = first.cte("found", recursive=True)
    following = (
        select(func.min(jobs.c.tenant))
        .where(_WAITING, jobs.c.tenant > found.c.tenant)
        .scalar_subquery()
    )
    found = found.union_all(select(following.label("tenant")).where(found.c.tenant.is_not(None)))
    rows = conn.execute(select(found.c.tenant).where(found.c.tenant.is_not(None))).all()
    return [row.tenant for row in rows]


def waiting_jobs(
    engine: Engine, per_tenant: int, now: datetime, created_before: datetime | None = None
) -> list[Waiting]:
    """Up to `per_tenant` first attempts still queued of every tenant, first in line first
    (ranked_at: creation moved earlier by priority): what the dispatcher needs to give
    `per_tenant` free units in any share between tenants; with `created_before`, only the
    jobs created before it."""
    with translated_errors(), engine.connect() as conn:
        tenants = _waiting_tenants(conn)
        if not tenants:
            return []
        # each tenant's line read from the index on its own, in one statement
        lines = [
            select(jobs.c.id, jobs.c.tenant, jobs.c.priority, jobs.c.created_at, jobs.c.ranked_at)
            .where(_WAITING, jobs.c.tenant == tenant)
            .where(jobs.c.created_at < created_before if created_before else true())
            .order_by(jobs.c.ranked_at, jobs.c.id)
            .limit(per_tenant)
            .subquery()
            for tenant in tenants
        ]
        query = union_all(*[select(line) for line in lines]) if len(lines) > 1 else select(lines[0])
        rows = conn.execute(query).all()
    return [
        Waiting(
            row.tenant,
            row.id,
            row.priority,
            waited_s=max(0.0, (now - row.created_at).total_seconds()),
        )
        for row in rows
    ]


def held_by_tenant(engine: Engine, key_id: str) -> dict[str, int]:
    """The units of `key_id` each tenant's jobs hold now: claimed and not yet terminal."""
    query = (
        select(jobs.c.tenant, func.count(literal_column("*")))
        .where(jobs.c.state.in_([s.value for s in IN_FLIGHT_STATES]))
        .where(jobs.c.capacity_key == key_id)
        .group_by(jobs.c.tenant)
    )
    with translated_errors(), engine.connect() as conn:
        return {tenant: int(count) for tenant, count in conn.execute(query).all()}


def waiting_by_tenant(engine: Engine) -> dict[str, int]:
    """How many jobs of each tenant wait for admission."""
    query = select(jobs.c.tenant, func.count(literal_column("*"))).where(_WAITING)
    with translated_errors(), engine.connect() as conn:
        return {t: int(n) for t, n in conn.execute(query.group_by(jobs.c.tenant)).all()}
