"""GET /v1/spend: a tenant sees its own spend and budgets, used, reserved and remaining in
the current day and month, never another tenant's."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from farmdomain.pricing import TenantBudget
from jobstore.budgets import set_budget
from tests.security.conftest import Farm, make_farm

# 1024 x 1024: $0.03
VALID = {"request": {"positivePrompt": "a lighthouse", "width": 1024, "height": 1024}}


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    yield from make_farm(tmp_path)


def test_spend_shows_the_callers_budgets_as_they_stand(farm: Farm) -> None:
    set_budget(farm.store.engine, TenantBudget("acme", Decimal(1), Decimal(20), 0.5))
    set_budget(farm.store.engine, TenantBudget("globex", Decimal(2), None))
    acme = farm.bearer("acme")
    job = farm.http.post("/v1/jobs", json=VALID, headers=acme).json()
    farm.store.claim(job["id"], 0)

    budgets = farm.http.get("/v1/spend", headers=acme).json()["budgets"]
    globex = farm.http.get("/v1/spend", headers=farm.bearer("globex")).json()["budgets"]

    assert [(b["tenant"], b["period"]) for b in budgets] == [("acme", "daily"), ("acme", "monthly")]
    daily = budgets[0]
    assert {
        k: Decimal(daily[k]) for k in ("limitUsd", "usedUsd", "reservedUsd", "remainingUsd")
    } == {
        "limitUsd": Decimal(1),
        "usedUsd": Decimal(0),
        "reservedUsd": Decimal("0.03"),
        "remainingUsd": Decimal("0.97"),
    }
    assert daily["softFraction"] == 0.5
    assert Decimal(budgets[1]["remainingUsd"]) == Decimal("19.97")
    assert [(b["tenant"], Decimal(b["reservedUsd"])) for b in globex] == [("globex", Decimal(0))]
