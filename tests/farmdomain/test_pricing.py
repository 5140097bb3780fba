"""The cost estimate reserved against the budgets, checked against the seed's prices, and
the walk that admits first claims within their tenants' budgets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from farmdomain.pricing import (
    Candidate,
    Period,
    TenantBudget,
    admit,
    estimate_usd,
    first_passed,
    over_budget_message,
)

REFS = {"inputs": {"referenceImages": ["https://example.com/a.jpg"] * 3}}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # the model page's "1k: $0.03"
        ({"width": 1024, "height": 1024}, "0.03"),
        ({}, "0.03"),
        ({"width": None, "height": None, "inputs": None}, "0.03"),
        # the seed's text-to-image and image-to-image examples
        ({"width": 1536, "height": 1024}, "0.045"),
        ({"width": 1536, "height": 1024, **REFS}, "0.09"),
        ({"width": 2048, "height": 2048}, "0.075"),
        ({"width": 256, "height": 256, "numberResults": 4}, "0.12"),
        ({"width": 1536, "height": 1024, "numberResults": 20, **REFS}, "1.8"),
    ],
)
def test_estimate_follows_the_per_megapixel_price(params: dict[str, Any], expected: str) -> None:
    assert estimate_usd({"positivePrompt": "x", **params}) == Decimal(expected)


def _candidates(*tenants: str) -> list[Candidate]:
    return [Candidate(f"job-{i}", tenant, Decimal("0.03")) for i, tenant in enumerate(tenants)]


def test_admit_counts_the_jobs_it_admits_against_the_budget_as_it_goes() -> None:
    budget = TenantBudget("acme", Decimal("0.10"), None)
    committed = {"acme": {Period.DAILY: Decimal("0.02"), Period.MONTHLY: Decimal("0.02")}}

    admitted, refused = admit(
        _candidates("acme", "acme", "acme", "free"), {"acme": budget}, committed, 10
    )

    assert admitted == ["job-0", "job-1", "job-3"]
    assert refused == {"job-2": (budget, Period.DAILY)}


def test_admit_judges_no_job_past_the_room_it_has() -> None:
    budget = TenantBudget("acme", Decimal(0), Decimal(0))

    admitted, refused = admit(_candidates("free", "acme", "free", "acme"), {"acme": budget}, {}, 2)

    assert admitted == ["job-0", "job-2"]
    assert refused == {"job-1": (budget, Period.DAILY)}


def test_the_monthly_budget_names_itself_when_only_it_is_passed() -> None:
    budget = TenantBudget("acme", Decimal(1), Decimal("0.05"))
    committed = {Period.DAILY: Decimal(0), Period.MONTHLY: Decimal("0.04")}

    assert first_passed(budget, committed, Decimal("0.01")) is None
    assert first_passed(budget, committed, Decimal("0.02")) is Period.MONTHLY
    assert over_budget_message(budget, Period.MONTHLY) == (
        "tenant acme's monthly budget of $0.05 would be passed"
    )


def test_a_period_starts_at_its_utc_midnight() -> None:
    now = datetime(2026, 3, 17, 23, 30, tzinfo=timezone(timedelta(hours=-5)))

    assert Period.DAILY.start(now) == datetime(2026, 3, 18, tzinfo=UTC)
    assert Period.MONTHLY.start(now) == datetime(2026, 3, 1, tzinfo=UTC)
