"""What a FLUX.2 [pro] job is expected to cost, before Runware reports the real figure, and
the tenants' budgets those estimates are reserved against.

Runware lists "1k: $0.03"; Black Forest Labs' pass-through price is 3 cents for the first
output megapixel and 1.5 cents for each further output megapixel and each reference
megapixel, counts rounded up. A megapixel is 1024 x 1024 pixels here, so "1k" is $0.03.
The size of a reference given by URL or UUID is unknown before Runware fetches it: each
counts as one megapixel, and the reported cost settles the difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

FIRST_MEGAPIXEL_USD = Decimal("0.03")
EXTRA_MEGAPIXEL_USD = Decimal("0.015")
MEGAPIXEL = 1024 * 1024
DEFAULT_SIDE = 1024


def megapixels(width: int, height: int) -> int:
    return max(1, math.ceil(width * height / MEGAPIXEL))


def estimate_usd(params: dict[str, Any]) -> Decimal:
    """The expected cost of a whole job: every image of it, with its references."""
    # a field sent as null means the same as one left out
    width = int(params.get("width") or DEFAULT_SIDE)
    height = int(params.get("height") or DEFAULT_SIDE)
    references = len((params.get("inputs") or {}).get("referenceImages") or [])
    per_image = FIRST_MEGAPIXEL_USD + EXTRA_MEGAPIXEL_USD * (
        megapixels(width, height) - 1 + references
    )
    return per_image * int(params.get("numberResults") or 1)


# -- budgets: what a tenant may spend per UTC day and month ----------------------------------

DEFAULT_SOFT_FRACTION = 0.8


class Period(StrEnum):
    """A budget's period, a UTC calendar day or month; a job counts in the periods of its
    first claim."""

    DAILY = "daily"
    MONTHLY = "monthly"

    def start(self, now: datetime) -> datetime:
        day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return day if self is Period.DAILY else day.replace(day=1)


@dataclass(frozen=True)
class TenantBudget:
    """A tenant's hard budgets (None: no limit in that period), and the fraction of one past
    which the alert warns."""

    tenant: str
    daily_usd: Decimal | None
    monthly_usd: Decimal | None
    soft_fraction: float = DEFAULT_SOFT_FRACTION

    def limit(self, period: Period) -> Decimal | None:
        return self.daily_usd if period is Period.DAILY else self.monthly_usd


@dataclass(frozen=True)
class Committed:
    """A tenant's jobs first claimed in a period: what Runware reported they cost (used), and
    what their estimates hold beyond that while Runware may still bill them (reserved)."""

    used_usd: Decimal = Decimal(0)
    reserved_usd: Decimal = Decimal(0)

    @property
    def total_usd(self) -> Decimal:
        return self.used_usd + self.reserved_usd


def usd_text(amount: Decimal) -> str:
    """`$5`, `$0.045`: a dollar figure as a message shows it."""
    return f"${amount.normalize():f}"


def over_budget_message(budget: TenantBudget, period: Period) -> str:
    limit = budget.limit(period)
    assert limit is not None
    return f"tenant {budget.tenant}'s {period} budget of {usd_text(limit)} would be passed"


def first_passed(
    budget: TenantBudget, committed: Mapping[Period, Decimal], estimate_usd: Decimal
) -> Period | None:
    """The first of the budget's periods that `estimate_usd` more would pass, if any."""
    for period in Period:
        limit = budget.limit(period)
        if limit is not None and committed.get(period, Decimal(0)) + estimate_usd > limit:
            return period
    return None


@dataclass(frozen=True)
class Candidate:
    """A job about to be claimed for the first time: whose, and what it is expected to cost."""

    job_id: str
    tenant: str
    estimate_usd: Decimal


def admit(
    candidates: Sequence[Candidate],
    budgets: Mapping[str, TenantBudget],
    committed: Mapping[str, Mapping[Period, Decimal]],
    room: int,
) -> tuple[list[str], dict[str, tuple[TenantBudget, Period]]]:
    """Walk `candidates` in their order until `room` are admitted: each job whose estimate
    fits its tenant's budgets (as committed so far, plus the jobs admitted before it) is
    admitted, one that does not is refused with the budget it would pass. Tenants without
    a budget are admitted as they come. Returns (admitted ids, {refused id: why})."""
    admitted: list[str] = []
    refused: dict[str, tuple[TenantBudget, Period]] = {}
    running = {tenant: dict(periods) for tenant, periods in committed.items()}
    for candidate in candidates:
        if len(admitted) >= room:
            break
        budget = budgets.get(candidate.tenant)
        if budget is not None:
            spent = running.setdefault(candidate.tenant, {})
            passed = first_passed(budget, spent, candidate.estimate_usd)
            if passed is not None:
                refused[candidate.job_id] = (budget, passed)
                continue
            for period in Period:
                spent[period] = spent.get(period, Decimal(0)) + candidate.estimate_usd
        admitted.append(candidate.job_id)
    return admitted, refused
