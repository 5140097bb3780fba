"""Tenants' weights in the fair sharing of admissions, and what each tenant has waiting and
in flight, for the dispatcher and the operator's `fluxfarm tenants`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, func, literal_column, select

from farmdomain.admission import DEFAULT_WEIGHT, weight_issues
from farmdomain.errors import RequestInvalid
from farmdomain.jobs import IN_FLIGHT_STATES
from farmdomain.values import utcnow
from jobstore import dialects
from jobstore.api_tokens import tenant_issues
from jobstore.schema import jobs, tenant_shares
from jobstore.statements import translated_errors
from jobstore.waiting import waiting_by_tenant


@dataclass(frozen=True)
class TenantShare:
    """A tenant as `fluxfarm tenants list` shows it."""

    tenant: str
    weight: float
    # whether the weight is the tenant's own or DEFAULT_WEIGHT
    weight_set: bool
    waiting: int
    in_flight: int


class TenantShares:
    """Reads and sets tenants' weights."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def weights(self) -> dict[str, float]:
        """Every weight an operator set, by tenant; the others weigh DEFAULT_WEIGHT."""
        query = select(tenant_shares.c.tenant, tenant_shares.c.weight)
        with translated_errors(), self.engine.connect() as conn:
            return {row.tenant: float(row.weight) for row in conn.execute(query).all()}

    def set_weight(self, tenant: str, weight: float) -> None:
        """Give `tenant` `weight`; RequestInvalid naming `tenant` or `weight` for either
        that cannot be."""
        issues = tenant_issues(tenant) + weight_issues(weight)
        if issues:
            raise RequestInvalid(issues)
        row = {"tenant": tenant, "weight": weight, "updated_at": utcnow()}
        insert = dialects.of(self.engine).insert(tenant_shares).values(row)
        statement = insert.on_conflict_do_update(
            index_elements=[tenant_shares.c.tenant],
            set_={"weight": insert.excluded.weight, "updated_at": insert.excluded.updated_at},
        )
        with translated_errors(), self.engine.begin() as conn:
            conn.execute(statement)

    def tenants(self) -> list[TenantShare]:
        """Every tenant with a weight set, jobs waiting or jobs in flight, by name."""
        weights = self.weights()
        waiting = waiting_by_tenant(self.engine)
        query = (
            select(jobs.c.tenant, func.count(literal_column("*")))
            .where(jobs.c.state.in_([s.value for s in IN_FLIGHT_STATES]))
            .group_by(jobs.c.tenant)
        )
        with translated_errors(), self.engine.connect() as conn:
            in_flight = {t: int(n) for t, n in conn.execute(query).all()}
        return [
            TenantShare(
                tenant,
                weights.get(tenant, DEFAULT_WEIGHT),
                tenant in weights,
                waiting.get(tenant, 0),
                in_flight.get(tenant, 0),
            )
            for tenant in sorted({*weights, *waiting, *in_flight})
        ]


class CachedWeights:
    """The tenants' weights as a dispatcher uses them: read again once `ttl_s` old, so an
    operator's change reaches every dispatcher within that long, at one read per period."""

    def __init__(
        self, shares: TenantShares, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._shares = shares
        self._ttl_s = ttl_s
        self._clock = clock
        self._read: tuple[float, dict[str, float]] | None = None

    def current(self) -> dict[str, float]:
        now = self._clock()
        if self._read is None or now - self._read[0] >= self._ttl_s:
            self._read = (now, self._shares.weights())
        return self._read[1]
