"""`fluxfarm results retention TENANT [DAYS]`: how long a tenant's images stay in the
results store, set or shown; the reaper deletes what is older."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from farmdomain.errors import FluxfarmError
from farmdomain.logs import configure_logging
from farmdomain.settings import get_settings
from jobstore.api_tokens import tenant_issues
from jobstore.engine import make_engine
from jobstore.retention import Retention

# a century: anything longer is a typo for 0 (for ever)
MAX_DAYS = 36_500


def add_command(subparsers: Any) -> None:
    results = subparsers.add_parser("results", help="the results store: retention per tenant")
    actions = results.add_subparsers(dest="results_command", required=True)
    retention = actions.add_parser(
        "retention",
        help="set (DAYS; 0 keeps them for ever) or show how long the tenant's images are kept",
    )
    retention.add_argument("tenant", metavar="TENANT")
    retention.add_argument("days", metavar="DAYS", type=_days, nargs="?")
    retention.set_defaults(handler=_retention)


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("DAYS must be a whole number of days") from None
    if not 0 <= days <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"DAYS must be 0 (for ever) to {MAX_DAYS}")
    return days


def _retention(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings, "cli")
    issues = tenant_issues(args.tenant)
    if issues:
        print(f"error: TENANT: {issues[0].rule}: {issues[0].message}", file=sys.stderr)
        return 2
    engine = make_engine(settings.resolved_database_url())
    try:
        retention = Retention(engine)
        if args.days is not None:
            retention.set_days(args.tenant, args.days)
        days = retention.days_of(args.tenant, settings.results_retention_days)
    except FluxfarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    kept = "for ever" if days == 0 else f"{days} days"
    print(f"{args.tenant}: images kept {kept}")
    return 0
