"""The fresh farm each scale benchmark starts from: its data dir emptied, a private Redis
and a throwaway PostgreSQL database beside it."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farmdomain.settings import Settings
from fluxfarm.processes import Farm, Pipeline, start_pipeline
from tests.private_servers import PrivateRedis, running
from tests.servers import fresh_postgres_database


@dataclass(frozen=True)
class BenchFarm:
    farm: Farm
    redis: PrivateRedis
    database_url: str


def bench_farm(stack: ExitStack, data_dir: Path, postgres_url: str) -> BenchFarm:
    """A farm on an emptied `data_dir`, its Redis and database; all closed with `stack`."""
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    farm = stack.enter_context(Farm(Settings(data_dir=data_dir), log_dir=data_dir / "logs"))
    redis = PrivateRedis(data_dir / "redis")
    stack.enter_context(running(redis))
    database_url = stack.enter_context(fresh_postgres_database(postgres_url, "fluxfarm_b_"))
    return BenchFarm(farm, redis, database_url)


def start_capped(
    farm: Farm, api_key: str, cap: int, latency_s: float, **overrides: Any
) -> Pipeline:
    """Simulator (each image `latency_s`), web, beat and a worker of 8 threads under the
    fleet's `cap`, admission dispatched twice a second; `overrides` are settings."""
    return start_pipeline(
        farm,
        api_key=api_key,
        simulator_flags=("--fast-images", "--latency-s", str(latency_s)),
        worker_name="worker-a",
        pool="threads",
        concurrency=8,
        runware_max_in_flight=cap,
        admission_dispatch_interval_s=0.5,
        **overrides,
    )
