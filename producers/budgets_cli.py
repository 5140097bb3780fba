"""`fluxfarm tenants budget|budgets`: set a tenant's hard daily and monthly budgets, and list
every budget as it stands (used, reserved, remaining)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Engine

from farmdomain.logs import configure_logging
from farmdomain.pricing import DEFAULT_SOFT_FRACTION, TenantBudget, usd_text
from farmdomain.settings import get_settings
from farmdomain.values import utcnow
from jobstore.api_tokens import tenant_issues
from jobstore.budgets import set_budget, standings
from jobstore.store import JobStore


def add_commands(tenants: Any) -> None:
    """Register the budget commands on the `fluxfarm tenants` group's subparsers."""
    budget = tenants.add_parser(
        "budget", help="set a tenant's hard budgets in USD; a period left out has none"
    )
    budget.add_argument("tenant", metavar="TENANT", type=_tenant)
    budget.add_argument("--daily", type=_usd, metavar="USD", help="per UTC day")
    budget.add_argument("--monthly", type=_usd, metavar="USD", help="per UTC month")
    budget.add_argument(
        "--soft",
        type=_fraction,
        default=DEFAULT_SOFT_FRACTION,
        metavar="FRACTION",
        help=f"used fraction past which the alert warns (default {DEFAULT_SOFT_FRACTION:g})",
    )
    budget.set_defaults(handler=_budget)

    listing = tenants.add_parser(
        "budgets", help="every budget in its current period: limit, used, reserved, remaining"
    )
    listing.add_argument("--tenant", type=_tenant, metavar="TENANT", help="one tenant only")
    listing.add_argument("--json", action="store_true", help="print the budgets as JSON")
    listing.set_defaults(handler=_budgets)


def _tenant(text: str) -> str:
    for issue in tenant_issues(text):
        raise argparse.ArgumentTypeError(issue.message)
    return text


def _usd(text: str) -> Decimal:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount < 0:
        raise argparse.ArgumentTypeError("must be an amount of USD, 0 or more")
    return amount


def _fraction(text: str) -> float:
    try:
        fraction = float(text)
    except ValueError:
        fraction = -1.0
    if not 0 < fraction <= 1:
        raise argparse.ArgumentTypeError("must be over 0 and at most 1")
    return fraction


def _on_store(run: Callable[[argparse.Namespace, Engine], int]) -> Callable[[Any], int]:
    """A handler given the environment's store, logging set up as every command's."""

    def handler(args: argparse.Namespace) -> int:
        settings = get_settings()
        configure_logging(settings, "cli")
        store = JobStore.from_settings(settings)
        try:
            return run(args, store.engine)
        finally:
            store.engine.dispose()

    return handler


@_on_store
def _budget(args: argparse.Namespace, engine: Engine) -> int:
    set_budget(engine, TenantBudget(args.tenant, args.daily, args.monthly, args.soft))
    print(f"tenant {args.tenant}: daily {_shown(args.daily)}, monthly {_shown(args.monthly)}")
    return 0


def _shown(limit: Decimal | None) -> str:
    return "no budget" if limit is None else usd_text(limit)


@_on_store
def _budgets(args: argparse.Namespace, engine: Engine) -> int:
    found = standings(engine, utcnow(), args.tenant)
    if args.json:
        print(json.dumps([s.model_dump(mode="json", by_alias=True) for s in found], indent=2))
        return 0
    columns = ("limit", "used", "reserved", "remaining")
    print(f"{'tenant':<20}  {'period':<8}  " + "  ".join(f"{c:>12}" for c in columns) + "  soft")
    for s in found:
        figures = (s.limit_usd, s.used_usd, s.reserved_usd, s.remaining_usd)
        print(
            f"{s.tenant:<20}  {s.period.value:<8}  "
            + "  ".join(f"{figure:>12}" for figure in figures)
            + f"  {s.soft_fraction:g}"
        )
    return 0
