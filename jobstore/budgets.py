"""Each tenant's hard budgets: kept in `tenant_budgets`, reserved by every first claim under
the budget row's lock, and settled by the reported costs of the jobs claimed in the period.

Nothing is counted twice or kept apart: a period's use is read from the jobs themselves.
A job counts from its first claim, in that claim's UTC day and month: while Runware may
still bill it (in flight, or canceled after its claim: late images are billed) at the
larger of its estimate and its reported cost so far, and once finished at its reported
cost alone. So a job that ends without charge releases its reservation in its terminal
transition, a late image settles its job up, and a retry, already claimed, reserves
nothing again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy import Connection, Engine, Row, bindparam, case, func, select

from farmdomain.errors import BudgetExceeded
from farmdomain.jobs import IN_FLIGHT_STATES, FailureReason, Job, JobState
from farmdomain.pricing import (
    Candidate,
    Committed,
    Period,
    TenantBudget,
    admit,
    first_passed,
    over_budget_message,
)
from farmdomain.values import Failure, from_micros, to_micros
from jobstore import dialects
from jobstore.event_log import event_params
from jobstore.schema import jobs, tenant_budgets
from jobstore.statements import (
    execute_with_events,
    job_from_row,
    state_among,
    transition_statement,
    translated_errors,
)

_JOB_IDS = bindparam("job_ids", type_=jobs.c.id.type, expanding=True)
# The budget rows of the tenants of the jobs about to be claimed, locked in tenant order
# (every claimer locks in that order: no deadlock). SQLite has no FOR UPDATE and needs none:
# its claims run one at a time under BEGIN IMMEDIATE.
_LOCK = (
    select(tenant_budgets)
    .where(tenant_budgets.c.tenant.in_(select(jobs.c.tenant).where(jobs.c.id.in_(_JOB_IDS))))
    .order_by(tenant_budgets.c.tenant)
    .with_for_update()
)
# the jobs a first claim of `job_ids` would take, in the order the claim takes them
_CANDIDATES = (
    select(jobs.c.id, jobs.c.tenant, jobs.c.estimate_micros)
    .where(jobs.c.id.in_(_JOB_IDS), jobs.c.attempts == 0, state_among(JobState.QUEUED.value))
    # the claim's own order (jobstore.statements): first in line, priority counted
    .order_by(jobs.c.ranked_at, jobs.c.id)
)
# a job whose every result is in bills nothing more, though it waits for its copies
_MAY_BILL = jobs.c.state.in_([s.value for s in (*IN_FLIGHT_STATES, JobState.CANCELED)]) & (
    jobs.c.images_received < jobs.c.number_results
)
_RESERVED = case(
    (
        _MAY_BILL & (jobs.c.estimate_micros > jobs.c.cost_micros),
        jobs.c.estimate_micros - jobs.c.cost_micros,
    ),
    else_=0,
)
_FAILURE_FIELDS = (
    "failure_reason",
    "failure_code",
    "failure_message",
    "failure_parameter",
    "finished_at",
)


class BudgetStanding(BaseModel):
    """One of a tenant's budgets as it stands in its current period."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    tenant: str
    period: Period = Field(description="daily or monthly (UTC calendar day or month).")
    since: datetime = Field(description="Start of the current period (UTC).")
    limit_usd: Decimal = Field(description="The budget.")
    used_usd: Decimal = Field(description="Reported cost of the jobs claimed in the period.")
    reserved_usd: Decimal = Field(
        description="Estimates still held beyond that, by jobs Runware may still bill."
    )
    remaining_usd: Decimal = Field(description="limit - used - reserved; negative if passed.")
    soft_fraction: float = Field(description="Used fraction past which the alert warns.")


def _budget_of(row: Row[Any]) -> TenantBudget:
    return TenantBudget(
        row.tenant,
        from_micros(row.daily_micros),
        from_micros(row.monthly_micros),
        row.soft_fraction,
    )


def set_budget(engine: Engine, budget: TenantBudget) -> None:
    """Make `budget` the tenant's, replacing any it had; it binds from the next claim."""
    values = {
        "daily_micros": to_micros(budget.daily_usd),
        "monthly_micros": to_micros(budget.monthly_usd),
        "soft_fraction": budget.soft_fraction,
    }
    statement = dialects.of(engine).insert(tenant_budgets).values(tenant=budget.tenant, **values)
    statement = statement.on_conflict_do_update(index_elements=["tenant"], set_=values)
    with translated_errors(), engine.begin() as conn:
        conn.execute(statement)


def budgets(engine: Engine, tenant: str | None = None) -> list[TenantBudget]:
    """Every tenant's budgets by tenant, or the one tenant's (none: no budget)."""
    query = select(tenant_budgets).order_by(tenant_budgets.c.tenant)
    if tenant is not None:
        query = query.where(tenant_budgets.c.tenant == tenant)
    with translated_errors(), engine.connect() as conn:
        return [_budget_of(row) for row in conn.execute(query).all()]


def committed(
    conn: Connection, limits: Collection[TenantBudget], now: datetime
) -> dict[str, dict[Period, Committed]]:
    """What the tenants of `limits` have committed in the periods `now` is in that their
    budgets limit: one query for all, reading only as far back as those periods start (a
    month's jobs only where a monthly budget asks for them)."""
    periods = [p for p in Period if any(b.limit(p) is not None for b in limits)]
    day = Period.DAILY.start(now)
    in_day = jobs.c.claimed_at >= day

    def total(value: Any, where: Any = None) -> Any:
        summed = value if where is None else case((where, value), else_=0)
        return func.coalesce(func.sum(summed), 0)

    tenants = [budget.tenant for budget in limits]
    query = (
        select(
            jobs.c.tenant,
            total(jobs.c.cost_micros, in_day),
            total(_RESERVED, in_day),
            total(jobs.c.cost_micros),
            total(_RESERVED),
        )
        .where(
            jobs.c.tenant.in_(tenants),
            jobs.c.claimed_at >= min((p.start(now) for p in periods), default=day),
        )
        .group_by(jobs.c.tenant)
    )
    found: dict[str, dict[Period, Committed]] = {
        tenant: {period: Committed() for period in periods} for tenant in tenants
    }
    for tenant, day_used, day_held, all_used, all_held in conn.execute(query).all():
        figures = {
            Period.DAILY: Committed(_usd(day_used), _usd(day_held)),
            Period.MONTHLY: Committed(_usd(all_used), _usd(all_held)),
        }
        found[tenant] = {period: figures[period] for period in periods}
    return found


def _usd(micros: int) -> Decimal:
    return from_micros(int(micros)) or Decimal(0)


def _totals(standing: dict[Period, Committed]) -> dict[Period, Decimal]:
    return {period: use.total_usd for period, use in standing.items()}


def reserve_first_claims(
    conn: Connection, job_ids: Sequence[str], room: int, now: datetime
) -> tuple[list[str], list[Job]]:
    """In the claim's transaction: which of `job_ids` (first claims, of which `room` may be
    taken) fit their tenants' budgets, and the jobs refused, failed here with reason quota.

    The tenants' budget rows stay locked until the claim commits, so claimers on every
    process see each other's claims: the budgets hold across the fleet.
    """
    locked = {row.tenant: _budget_of(row) for row in conn.execute(_LOCK, {"job_ids": job_ids})}
    if not locked:
        return list(job_ids), []
    candidates = [
        Candidate(row.id, row.tenant, _usd(row.estimate_micros))
        for row in conn.execute(_CANDIDATES, {"job_ids": job_ids})
    ]
    standing = committed(conn, list(locked.values()), now)
    admitted, refused = admit(
        candidates, locked, {tenant: _totals(use) for tenant, use in standing.items()}, room
    )
    failed: list[Job] = []
    by_failure: dict[Failure, list[str]] = {}
    for job_id, (budget, period) in refused.items():
        code = f"tenant{period.value.capitalize()}BudgetExceeded"
        failure = Failure(FailureReason.QUOTA, over_budget_message(budget, period), code)
        by_failure.setdefault(failure, []).append(job_id)
    statement = transition_statement(JobState.QUEUED.value, JobState.FAILED.value, _FAILURE_FIELDS)
    for failure, ids in by_failure.items():
        values = [failure.reason, failure.code, failure.message, failure.parameter, now]
        detail = {"reason": failure.reason, "code": failure.code, "message": failure.message}
        rows = execute_with_events(
            conn,
            statement,
            {"job_ids": ids, "now": now}
            | {f"set_{name}": value for name, value in zip(_FAILURE_FIELDS, values, strict=True)}
            | event_params("failed", JobState.QUEUED, JobState.FAILED, detail, now),
        )
        failed += [job_from_row(row, [], []) for row in rows]
    return admitted, failed


def check_room(
    engine: Engine,
    tenant: str,
    requests: Sequence[tuple[str | None, Decimal]],
    now: datetime,
    field: str = "request",
) -> None:
    """Raise BudgetExceeded if the new jobs of `requests` ((idempotency key, estimate) each)
    would pass one of the tenant's budgets as they stand: a producer's early refusal, without
    locks (the claim is the exact check). A request whose key already names a job of the
    tenant is not new: it adds nothing."""
    with translated_errors(), engine.connect() as conn:
        row = conn.execute(select(tenant_budgets).where(tenant_budgets.c.tenant == tenant)).first()
        if row is None:
            return
        budget = _budget_of(row)
        standing = _totals(committed(conn, [budget], now)[tenant])
        estimate = sum((usd for _, usd in requests), Decimal(0))
        passed = first_passed(budget, standing, estimate)
        if passed is None:
            return
        # only a request that would be refused is worth the look: is it a repeat?
        keys = [key for key, _ in requests if key is not None]
        known = set(
            conn.execute(
                select(jobs.c.idempotency_key).where(
                    jobs.c.tenant == tenant, jobs.c.idempotency_key.in_(keys)
                )
            ).scalars()
        )
    estimate = sum((usd for key, usd in requests if key not in known), Decimal(0))
    passed = first_passed(budget, standing, estimate) if known else passed
    if passed is not None:
        limit = budget.limit(passed)
        assert limit is not None
        remaining = limit - standing[passed]
        raise BudgetExceeded(over_budget_message(budget, passed), remaining, estimate, field)


def standings(engine: Engine, now: datetime, tenant: str | None = None) -> list[BudgetStanding]:
    """Every budget of every tenant (or of one) as it stands at `now`, by tenant."""
    found = budgets(engine, tenant)
    if not found:
        return []
    with translated_errors(), engine.connect() as conn:
        standing = committed(conn, found, now)
    return [
        BudgetStanding(
            tenant=budget.tenant,
            period=period,
            since=period.start(now),
            limit_usd=limit,
            used_usd=standing[budget.tenant][period].used_usd,
            reserved_usd=standing[budget.tenant][period].reserved_usd,
            remaining_usd=limit - standing[budget.tenant][period].total_usd,
            soft_fraction=budget.soft_fraction,
        )
        for budget in found
        for period in Period
        if (limit := budget.limit(period)) is not None
    ]
