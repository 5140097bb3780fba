"""What a budgeted tenant's first claim pays to read its period: the tenant's jobs claimed
this month, summed as the claim does (jobstore.budgets.committed), at a given job count.

`python -m bench.budget_read --database-url URL --jobs 100000` on a throwaway database
(migrated here; its `jobs` gain the rows written).
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import insert, text

from farmdomain.pricing import TenantBudget
from jobstore.budgets import committed
from jobstore.engine import make_engine
from jobstore.migrations import upgrade
from jobstore.schema import jobs

READS = 20
PAGE = 5000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.budget_read", description=__doc__)
    parser.add_argument("--database-url", required=True, help="a throwaway database")
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs claimed this month")
    args = parser.parse_args(argv)
    upgrade(args.database_url)
    engine = make_engine(args.database_url)
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    # one a second back from now, all within the month only when it is old enough: the
    # figure is for the rows the month's read finds
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    step = min(timedelta(seconds=1), (now - month) / max(args.jobs, 1))
    with engine.begin() as conn:
        for start in range(0, args.jobs, PAGE):
            conn.execute(
                insert(jobs),
                [_row(tenant, now - step * i) for i in range(start, min(start + PAGE, args.jobs))],
            )
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE jobs"))
    budget = TenantBudget(tenant, Decimal(1), Decimal(100))
    with engine.connect() as conn:
        committed(conn, [budget], now)
        started = time.perf_counter()
        for _ in range(READS):
            committed(conn, [budget], now)
        per_read_ms = (time.perf_counter() - started) / READS * 1000
    engine.dispose()
    print(f"{args.jobs} jobs claimed this month: {per_read_ms:.1f} ms per read")


def _row(tenant: str, at: datetime) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "task_uuid": str(uuid.uuid4()),
        "tenant": tenant,
        "request_hash": "bench",
        "state": "succeeded",
        "request": {},
        "number_results": 1,
        "images_received": 1,
        "cost_micros": 30_000,
        "estimate_micros": 30_000,
        "attempts": 1,
        "created_at": at,
        "updated_at": at,
        "deadline_at": at,
        "claimed_at": at,
    }


if __name__ == "__main__":
    main()
