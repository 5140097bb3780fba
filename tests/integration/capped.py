"""A farm under a fleet-wide cap, as the admission and backpressure tests start it: the
simulator as Runware at a fixed generation time, web, beat and a threads-pool worker on
Redis and a PostgreSQL database of the test's own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from farmdomain.settings import Settings
from fluxfarm.processes import Farm, Pipeline, start_pipeline
from tests.services import fresh_postgres_database


@contextlib.contextmanager
def capped_pipeline(
    tmp_path: Path, redis_url: str, api_key: str, cap: int, latency_s: float, **overrides: Any
) -> Iterator[tuple[Farm, Pipeline]]:
    """The farm and its pipeline; `overrides` are settings (clocks, attempts...)."""
    with (
        fresh_postgres_database() as database_url,
        Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "logs") as farm,
    ):
        pipeline = start_pipeline(
            farm,
            api_key=api_key,
            simulator_flags=("--fast-images", "--latency-s", str(latency_s)),
            worker_name="worker-a",
            pool="threads",
            concurrency=8,
            broker_url=redis_url,
            database_url=database_url,
            webhook_secret=f"{api_key}-secret",
            runware_max_in_flight=cap,
            admission_dispatch_interval_s=0.5,
            **overrides,
        )
        yield farm, pipeline
