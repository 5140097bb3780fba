"""The farm under a fleet-wide cap of the admission and backpressure tests: bench's capped
farm (bench/farms.py) on Redis and a PostgreSQL database of the test's own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.farms import start_capped
from farmdomain.settings import Settings
from fluxfarm.processes import Farm, Pipeline
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
        pipeline = start_capped(
            farm,
            api_key,
            cap,
            latency_s,
            broker_url=redis_url,
            database_url=database_url,
            webhook_secret=f"{api_key}-secret",
            **overrides,
        )
        yield farm, pipeline
