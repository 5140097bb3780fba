"""Spend per day and model from the store: Runware's reported cost, once per stored result;
beside it, the tenants' budgets as they stand (jobstore.budgets).

Over all tenants it is the figure the `fluxfarm_spend_usd_total` counter adds up (each
distinct result once, late ones included), but exact and kept as long as the store is.
The CLI reports every tenant or one; the job API only the caller's tenant.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy import Engine, func, select

from farmdomain.request_schema import MODEL_ID
from farmdomain.values import from_micros
from jobstore import dialects
from jobstore.budgets import BudgetStanding, standings
from jobstore.schema import jobs, results

DEFAULT_DAYS = 30
MAX_DAYS = 3660


class SpendDay(BaseModel):
    """What one UTC day's results of one model cost."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    day: str = Field(description="UTC date the results were received, YYYY-MM-DD.")
    model: str = Field(description="Runware model identifier.")
    usd: Decimal = Field(description="Sum of Runware's reported cost, exact.")
    results: int = Field(description="Distinct results received (images).")


class SpendReport(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    since: datetime = Field(description="Start of the period (UTC).")
    days: list[SpendDay]
    total_usd: Decimal = Field(description="Sum over the period.")
    budgets: list[BudgetStanding] = Field(
        description="The tenant's budgets (every tenant's, for the operator) in their"
        " current periods: none for a tenant without one."
    )


def spend_report(
    engine: Engine,
    days: int = DEFAULT_DAYS,
    *,
    tenant: str | None = None,
    now: datetime | None = None,
) -> SpendReport:
    """Spend of the last `days` UTC days, today included, oldest first, and the budgets as
    they stand; one tenant or all."""
    now = now or datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - timedelta(days=days - 1)
    day = dialects.of(engine).utc_day(results.c.received_at).label("day")
    query = (
        select(day, func.coalesce(func.sum(results.c.cost_micros), 0), func.count())
        .where(results.c.received_at >= since)
        .group_by(day)
        .order_by(day)
    )
    if tenant is not None:
        query = query.join(jobs, jobs.c.id == results.c.job_id).where(jobs.c.tenant == tenant)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    # every job runs one model (see farmdomain.request_schema), so the model is that constant
    spent = [
        SpendDay(day=str(d), model=MODEL_ID, usd=from_micros(int(m)) or Decimal(0), results=n)
        for d, m, n in rows
    ]
    return SpendReport(
        since=since,
        days=spent,
        total_usd=sum((s.usd for s in spent), Decimal(0)),
        budgets=standings(engine, now, tenant),
    )
