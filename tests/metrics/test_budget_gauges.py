"""The tenants' budget gauges web reads from the store: used fraction, soft threshold and what
is left, per tenant and period."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from prometheus_client import CollectorRegistry

from farmdomain.pricing import TenantBudget
from farmdomain.settings import Settings
from farmweb.gauges import FarmStateCollector, read_farm_state
from jobstore.budgets import set_budget
from jobstore.migrations import upgrade
from jobstore.store import JobStore

# 1024 x 1024: $0.03
PARAMS = {"positivePrompt": "a kiln at dusk", "width": 1024, "height": 1024}


def test_each_budget_shows_its_used_fraction_soft_threshold_and_remainder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore.from_url(url)
    set_budget(store.engine, TenantBudget("acme", Decimal("0.12"), Decimal(3), 0.5))
    set_budget(store.engine, TenantBudget("globex", Decimal(0), None))
    job, _ = store.create_job(PARAMS, tenant="acme", deadline_s=600)
    store.claim(job.id, 0)
    registry = CollectorRegistry()
    registry.register(FarmStateCollector(Settings(), lambda: read_farm_state(store.engine, dict)))

    def sample(name: str, tenant: str, period: str) -> float | None:
        value = registry.get_sample_value(name, {"tenant": tenant, "period": period})
        return None if value is None else round(value, 6)

    assert sample("fluxfarm_tenant_budget_used_ratio", "acme", "daily") == 0.25
    assert sample("fluxfarm_tenant_budget_used_ratio", "acme", "monthly") == 0.01
    assert sample("fluxfarm_tenant_budget_soft_ratio", "acme", "daily") == 0.5
    assert sample("fluxfarm_tenant_budget_remaining_usd", "acme", "daily") == 0.09
    assert sample("fluxfarm_tenant_budget_used_ratio", "globex", "daily") == 1.0
    assert sample("fluxfarm_tenant_budget_used_ratio", "globex", "monthly") is None
    store.engine.dispose()
