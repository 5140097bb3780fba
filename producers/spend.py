"""Spend per day and model from the store: Runware's reported cost, once per stored result.

Over all tenants it is the figure the `fluxfarm_spend_usd_total` counter adds up (each
distinct result once, late ones included), but exact and kept as long as the store is.
The CLI reports every tenant or one; the HTTP route only the caller's tenant.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy import Engine, func, select

from core.logs import configure_logging
from core.records import from_micros
from core.request_schema import MODEL_ID
from core.settings import get_settings
from core.store import JobStore
from core.tables import jobs, results
from producers.auth import Caller, caller
from producers.views import GUARDED_RESPONSES, refusal

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


def _day(engine: Engine) -> Any:
    if engine.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", results.c.received_at), "YYYY-MM-DD")
    # SQLite keeps the UTC timestamp as ISO text
    return func.substr(results.c.received_at, 1, 10)


def spend_report(
    engine: Engine,
    days: int = DEFAULT_DAYS,
    *,
    tenant: str | None = None,
    now: datetime | None = None,
) -> SpendReport:
    """Spend of the last `days` UTC days, today included, oldest first; one tenant or all."""
    today = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - timedelta(days=days - 1)
    day = _day(engine).label("day")
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
    # every job runs one model (see core.request_schema), so the model is that constant
    spent = [
        SpendDay(day=str(d), model=MODEL_ID, usd=from_micros(int(m)) or Decimal(0), results=n)
        for d, m, n in rows
    ]
    return SpendReport(since=since, days=spent, total_usd=sum((s.usd for s in spent), Decimal(0)))


def build_router() -> APIRouter:
    """GET /v1/spend: the calling tenant's spend; the app provides `app.state.client`."""
    router = APIRouter(prefix="/v1/spend", tags=["spend"])

    responses = {422: refusal("`days` is out of range."), **GUARDED_RESPONSES}

    @router.get("", response_model=SpendReport, response_model_by_alias=True, responses=responses)
    def get_spend(
        request: Request,
        who: Annotated[Caller, Depends(caller)],
        days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = DEFAULT_DAYS,
    ) -> SpendReport:
        store: JobStore = request.app.state.client.store
        return spend_report(store.engine, days, tenant=who.tenant)

    return router


def add_command(subparsers: Any) -> None:
    spend = subparsers.add_parser("spend", help="spend per day and model, from the store")
    spend.add_argument("--days", type=_days, default=DEFAULT_DAYS, help="UTC days, today included")
    spend.add_argument("--tenant", help="one tenant only; default: every tenant")
    spend.add_argument("--json", action="store_true", help="print the report as JSON")
    spend.set_defaults(handler=_spend)


def _days(text: str) -> int:
    days = int(text)
    if not 1 <= days <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_DAYS}")
    return days


def _spend(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings, "cli")
    store = JobStore.from_settings(settings)
    try:
        report = spend_report(store.engine, args.days, tenant=args.tenant)
    finally:
        store.engine.dispose()
    if args.json:
        print(report.model_dump_json(by_alias=True, indent=2))
        return 0
    print(f"{'day':<10}  {'model':<10}  {'results':>8}  {'usd':>14}")
    for row in report.days:
        print(f"{row.day:<10}  {row.model:<10}  {row.results:>8}  {row.usd:>14}")
    print(
        f"{'total':<10}  {'':<10}  {sum(r.results for r in report.days):>8}  {report.total_usd:>14}"
    )
    return 0
