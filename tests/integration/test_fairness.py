"""Fairness between tenants with real processes: two workers (threads and prefork pools)
under a fleet-wide cap, the simulator as Runware at a short generation, Redis and
PostgreSQL. Tenant alpha queues a backlog of thousands; bravo's jobs, queued behind it,
are admitted while most of it still waits; with alpha weighing 3 the admissions split 3:1
while both wait. Judged from the timestamps the store recorded (bench.fairness)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench.fairness import Scenario, farm_settings, measure, table
from farmdomain.settings import Settings
from fluxfarm.processes import Farm
from tests.services import fresh_postgres_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# the backlog is 10,000 jobs (`fluxfarm bench --fairness`, figures in README);
# 1,500 at a cap of 20 and 0.2 s a generation keep this test near a minute
SCENARIO = Scenario(backlog=1500, cap=20, bravo_weighted=300)
LATENCY_S = 0.2


@pytest.fixture
def farm(tmp_path: Path, redis_url: str) -> Iterator[Settings]:
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres_database())
        farm = stack.enter_context(Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "logs"))
        yield farm_settings(
            farm, SCENARIO.cap, LATENCY_S, broker_url=redis_url, database_url=database_url
        )


def test_a_backlog_does_not_hold_back_another_tenant_and_weights_split_the_cap(
    farm: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = measure(farm, SCENARIO)
    with capsys.disabled():
        print("\n" + table(figures, SCENARIO, LATENCY_S))

    # bravo came after every one of alpha's jobs, yet all of bravo's were admitted while
    # most of alpha's earlier ones still waited: bravo did not queue behind the backlog
    assert figures.alpha_before == SCENARIO.backlog
    assert figures.alpha_waiting_after > SCENARIO.backlog // 2
    # and it waited less than alpha's jobs admitted meanwhile
    assert figures.bravo_p95_s < figures.alpha_p95_s
    # both waited through the whole weighted window, which split 3:1 within 5 %
    assert figures.alpha_outlasted
    assert figures.ratio == pytest.approx(3, rel=0.05), figures.window
