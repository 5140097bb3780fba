"""The fresh farm each scale benchmark starts from: its data dir emptied, a private Redis
and a throwaway PostgreSQL database beside it."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from farmdomain.settings import Settings
from fluxfarm.processes import Farm
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
