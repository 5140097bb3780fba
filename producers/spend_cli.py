"""`fluxfarm spend`: spend per day and model, for every tenant or one."""

from __future__ import annotations

import argparse
from typing import Any

from farmdomain.logs import configure_logging
from farmdomain.settings import get_settings
from jobstore.spend import DEFAULT_DAYS, MAX_DAYS, spend_report
from jobstore.store import JobStore


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
