"""Every fault we can produce on one machine, 200 jobs each: none lost, none paid twice."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fluxfarm.processes import Child
from tests.integration.chaos.harness import (
    ChaosFarm,
    ChaosResult,
    chaos_farm,
    run_scenario,
    worker_children,
)
from tests.private_servers import PrivatePostgres, PrivateRabbitMQ, PrivateRedis, restart

Reporter = Callable[[ChaosResult], None]

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(480)]


def _assert_held(result: ChaosResult, report: Reporter) -> None:
    report(result)
    assert result.lost == 0, result.states
    assert result.paid_twice == 0
    assert result.duplicate_results == 0
    assert result.charged_usd == result.recorded_usd


def _running(chaos: ChaosFarm, name: str) -> Child:
    found = _live(chaos, name)
    assert found is not None, f"no {name} is running"
    return found


def _live(chaos: ChaosFarm, name: str) -> Child | None:
    return next(
        (c for c in chaos.farm.children if c.name == name and c.process.poll() is None), None
    )


def test_worker_killed_at_random_moments_and_in_each_window(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        rng = random.Random(11)
        name = chaos.workers[-1].name
        for _ in range(8):
            time.sleep(rng.uniform(0.3, 1.0))
            worker = _live(chaos, name)
            if worker is None:
                continue  # the supervisor is starting it again
            # a prefork worker loses one pool process; a threads worker, all of itself
            victims = worker_children(worker) or [worker.process.pid]
            os.kill(rng.choice(victims), signal.SIGKILL)
        worker = _live(chaos, name)
        if worker is not None:
            chaos.farm.kill(worker)
        chaos.start_worker("worker-b")

    # the crash points hit the two windows deterministically: claimed but not POSTed, and
    # POSTed but `submitted` not recorded
    crash_points = {"after_claim": 0.03, "after_post": 0.03}
    with chaos_farm(
        tmp_path, broker_url=redis_broker.url, database_url=postgres, crash_points=crash_points
    ) as chaos:
        result = run_scenario("kill -9 of workers (random + both windows)", chaos, disrupt)
    _assert_held(result, report)


def test_worker_sigterm_lets_in_flight_submits_finish(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        time.sleep(1.5)
        chaos.farm.kill(chaos.workers[-1], signal.SIGTERM)
        chaos.start_worker("worker-b")

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("SIGTERM of the worker (rolling restart)", chaos, disrupt)
    _assert_held(result, report)


def test_rabbitmq_restart_mid_run(
    tmp_path: Path, postgres: str, rabbitmq_broker: PrivateRabbitMQ, report: Reporter
) -> None:
    def disrupt(_chaos: ChaosFarm) -> None:
        time.sleep(1.5)
        rabbitmq_broker.stop()
        time.sleep(3)
        rabbitmq_broker.start()

    with chaos_farm(tmp_path, broker_url=rabbitmq_broker.url, database_url=postgres) as chaos:
        result = run_scenario("RabbitMQ restart mid-run", chaos, disrupt)
    _assert_held(result, report)


def test_redis_restart_mid_run_loses_messages_and_the_reaper_recovers(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(_chaos: ChaosFarm) -> None:
        time.sleep(1.5)
        redis_broker.kill()
        time.sleep(3)
        redis_broker.start()

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("Redis restart mid-run (queue lost)", chaos, disrupt)
    _assert_held(result, report)


def test_webhook_receiver_down_for_30_seconds(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        time.sleep(1.0)
        chaos.farm.kill(_running(chaos, "web"))
        time.sleep(30)
        chaos.restart_web()

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("webhook receiver down 30 s", chaos, disrupt)
    _assert_held(result, report)


def test_dropped_duplicated_and_reordered_webhooks(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    flags = (
        "--webhook-drop-share",
        "0.2",
        "--webhook-duplicate-share",
        "0.2",
        "--webhook-reorder-max-s",
        "1.5",
    )
    with chaos_farm(
        tmp_path, broker_url=redis_broker.url, database_url=postgres, simulator_flags=flags
    ) as chaos:
        result = run_scenario(
            "webhooks 20 % dropped, 20 % duplicated, reordered", chaos, lambda _chaos: None
        )
    _assert_held(result, report)


def test_429_storm(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.set_faults(submit_429_share=0.5)
        time.sleep(10)
        chaos.reset_faults()

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("429 on half of all submits for 10 s", chaos, disrupt)
    _assert_held(result, report)


def test_postgresql_restart_mid_run(
    tmp_path: Path,
    private_postgres: PrivatePostgres,
    postgres: str,
    redis_broker: PrivateRedis,
    report: Reporter,
) -> None:
    def disrupt(_chaos: ChaosFarm) -> None:
        time.sleep(1.5)
        restart(private_postgres)

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("PostgreSQL restart mid-run", chaos, disrupt)
    _assert_held(result, report)


def test_submits_that_hang_past_the_client_timeout(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    flags = ("--submit-hang-share", "0.2", "--hang-s", "4")
    with chaos_farm(
        tmp_path, broker_url=redis_broker.url, database_url=postgres, simulator_flags=flags
    ) as chaos:
        result = run_scenario("20 % of submits hang past the timeout", chaos, lambda _c: None)
    _assert_held(result, report)


@pytest.mark.parametrize("mode", ["error", "hang"])
def test_submits_accepted_but_answered_with_a_failure(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter, mode: str
) -> None:
    flags = ("--accepted-error-share", "0.2", "--accepted-error-mode", mode, "--hang-s", "4")
    with chaos_farm(
        tmp_path, broker_url=redis_broker.url, database_url=postgres, simulator_flags=flags
    ) as chaos:
        label = "5xx" if mode == "error" else "a hang"
        result = run_scenario(
            f"20 % of submits accepted, answered with {label}", chaos, lambda _c: None
        )
    _assert_held(result, report)
