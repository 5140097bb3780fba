"""`fluxfarm tenants`: the tenants sharing the farm, with their weights in the fair sharing
of admissions and what each has waiting and in flight; their budgets (producers.budgets_cli).

Each action is one function of ACTIONS that registers its parser on the group's
subparsers; another kind of per-tenant setting is one more function there.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from farmdomain.errors import FieldIssue, RequestInvalid
from farmdomain.logs import configure_logging
from farmdomain.settings import Settings, get_settings
from jobstore.store import JobStore
from jobstore.tenant_shares import TenantShare, TenantShares
from producers import budgets_cli

EXIT_OK = 0
EXIT_REJECTED = 2

Run = Callable[[argparse.Namespace, TenantShares], int]


def add_command(subparsers: Any) -> None:
    tenants = subparsers.add_parser(
        "tenants",
        help="tenants: weights in the fair sharing of admissions, waiting, in flight; budgets",
    )
    actions = tenants.add_subparsers(dest="tenants_command", required=True)
    for register in ACTIONS:
        register(actions)


def _add_list(actions: Any) -> None:
    listing = actions.add_parser(
        "list", help="every tenant with a weight, jobs waiting or in flight"
    )
    listing.add_argument("--json", action="store_true", help="print the tenants as JSON")
    listing.set_defaults(handler=command(_list))


def _add_weight(actions: Any) -> None:
    weight = actions.add_parser(
        "weight", help="set a tenant's weight: its share of admissions while others wait too"
    )
    weight.add_argument("tenant", metavar="TENANT")
    weight.add_argument("weight", metavar="W", help="a number over 0 (a tenant weighs 1 unset)")
    weight.set_defaults(handler=command(_weight))


ACTIONS: tuple[Callable[[Any], None], ...] = (_add_list, _add_weight, budgets_cli.add_commands)


def command(run: Run) -> Callable[[argparse.Namespace], int]:
    """A handler with the environment's settings, logging and the tenants' table; a value
    that cannot be is one line per broken rule on stderr, naming its field."""

    def handler(args: argparse.Namespace) -> int:
        settings: Settings = get_settings()
        configure_logging(settings, "cli")
        store = JobStore.from_settings(settings)
        try:
            return run(args, TenantShares(store.engine))
        except RequestInvalid as exc:
            for issue in exc.issues:
                print(f"error: {issue.field}: {issue.rule}: {issue.message}", file=sys.stderr)
            return EXIT_REJECTED
        finally:
            store.engine.dispose()

    return handler


def _list(args: argparse.Namespace, shares: TenantShares) -> int:
    tenants = shares.tenants()
    if args.json:
        print(json.dumps([_as_json(t) for t in tenants], indent=2))
        return EXIT_OK
    print(f"{'tenant':<24} {'weight':>8}  {'waiting':>9} {'in flight':>9}")
    for t in tenants:
        weight = f"{t.weight:g}" + ("" if t.weight_set else "*")
        print(f"{t.tenant:<24} {weight:>8}  {t.waiting:>9} {t.in_flight:>9}")
    if any(not t.weight_set for t in tenants):
        print("* the default weight: none set")
    return EXIT_OK


def _as_json(tenant: TenantShare) -> dict[str, Any]:
    return {
        "tenant": tenant.tenant,
        "weight": tenant.weight,
        "weightSet": tenant.weight_set,
        "waiting": tenant.waiting,
        "inFlight": tenant.in_flight,
    }


def _weight(args: argparse.Namespace, shares: TenantShares) -> int:
    try:
        weight = float(args.weight)
    except ValueError:
        issue = FieldIssue("weight", "number", f"must be a number, got {args.weight!r}")
        raise RequestInvalid([issue]) from None
    shares.set_weight(args.tenant, weight)
    print(f"tenant {args.tenant}: weight {weight:g}")
    return EXIT_OK
