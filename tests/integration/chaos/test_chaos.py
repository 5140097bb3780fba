"""Faults of the farm's own processes and servers, 200 jobs each: workers killed and
stopped, the broker and the store restarted, no worker consuming. None lost, none paid
twice, and each fault shown to have met work in flight (the table's "hit" column).

Faults are triggered on what the store shows the farm doing (K jobs submitted, M queued),
never after a sleep; the broker and store they break are the test's own. A real
Prometheus scrapes every farm and evaluates the alert rules (their windows compressed,
harness.ALERT_RULES): the faults an alert exists for raise it and see it resolve, and
every row says which alerts fired. Runware's and the webhooks' faults are in
test_runware_faults.py.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.integration.chaos.checks import Reporter, assert_held, at_least, created, ready
from tests.integration.chaos.crashing_worker import hits
from tests.integration.chaos.harness import ChaosFarm, chaos_farm, run_scenario
from tests.private_servers import PrivatePostgres, PrivateRabbitMQ, PrivateRedis

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(480)]

CRASHING_APP = "tests.integration.chaos.crashing_worker"


def test_worker_killed_in_each_window_and_while_submitting(
    tmp_path: Path,
    postgres: str,
    redis_broker: PrivateRedis,
    report: Reporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = tmp_path / "crash-ledger"
    # claimed but not POSTed, and POSTed but `submitted` not recorded, twice each, each
    # at the twelfth job a worker process takes through the window
    windows = ["after_claim", "after_post", "after_claim", "after_post"]
    plan = {"windows": windows, "on_job": 12, "ledger": str(ledger)}
    monkeypatch.setenv("FLUXFARM_TEST_CRASH_PLAN", json.dumps(plan))
    kills = 2

    def disrupt(chaos: ChaosFarm) -> None:
        chaos.until("every planned crash", lambda: len(hits(ledger)) == len(windows))
        for _ in range(kills):
            done = (chaos.states() or {}).get("succeeded", 0)
            # the restarted worker is at work: jobs finish, others are mid-submit. Webhooks
            # finish jobs while no worker runs, so the worker's readiness is part of it
            chaos.when(
                "a working worker mid-submit",
                lambda s, done=done: (
                    s.get("succeeded", 0) >= done + 10
                    and s.get("submitting", 0) >= 1
                    and ready(chaos, "worker-a") is not None
                ),
            )
            # every planned crash is behind it: a ready worker-a no longer dies on its own
            worker = ready(chaos, "worker-a")
            assert worker is not None, "worker-a died on its own meanwhile"
            # its own death, as the supervisor sees it: it is started again
            chaos.land(
                "kill -9 of the worker", lambda w=worker: os.kill(w.process.pid, signal.SIGKILL)
            )
        chaos.start_worker("worker-b", CRASHING_APP)

    with chaos_farm(
        tmp_path, broker_url=redis_broker.url, database_url=postgres, worker_app=CRASHING_APP
    ) as chaos:
        result = run_scenario(
            "kill -9 of workers (each window twice + while submitting)",
            chaos,
            disrupt,
            submit_per_s=15,
        )
    assert hits(ledger) == windows
    resubmitted = result.evidence["resubmitted"]
    # a death after the claim leaves its batch in `submitting`, unPOSTed, for the reaper to
    # resubmit; one after the POST may not: Runware has the task and its webhook settles it
    assert resubmitted >= windows.count("after_claim")
    assert_held(result, report, resubmitted, f"resubmitted ({len(windows)} crashes, {kills} kills)")


def test_worker_sigterm_lets_in_flight_submits_finish(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("jobs mid-submit", at_least(submitting=1, submitted=10))
        chaos.land("SIGTERM", lambda: chaos.farm.kill(chaos.workers[-1], signal.SIGTERM))
        chaos.start_worker("worker-b")

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("SIGTERM of the worker (rolling restart)", chaos, disrupt)
    (landing,) = result.landings
    # a warm shutdown finishes what it POSTs: nothing is left for the reaper to resubmit
    assert result.evidence["resubmitted"] == 0
    assert_held(result, report, landing.in_flight, "in flight at the signal")


def test_rabbitmq_restart_mid_run(
    tmp_path: Path, postgres: str, rabbitmq_broker: PrivateRabbitMQ, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("a backlog on the broker", at_least(queued=20, submitted=5))
        chaos.land("RabbitMQ stop", rabbitmq_broker.stop)
        rabbitmq_broker.start()

    with chaos_farm(tmp_path, broker_url=rabbitmq_broker.url, database_url=postgres) as chaos:
        result = run_scenario("RabbitMQ restart mid-run", chaos, disrupt)
    (landing,) = result.landings
    assert_held(result, report, landing.states.get("queued", 0), "queued at the stop")


def test_redis_restart_mid_run_loses_messages_and_the_reaper_recovers(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("a backlog on the broker", at_least(queued=20, submitted=5))
        chaos.land("Redis kill", redis_broker.kill)
        redis_broker.start()

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("Redis restart mid-run (queue lost)", chaos, disrupt)
    republished = result.evidence["republished"]
    assert_held(result, report, republished, "republished (messages lost)")


def test_no_worker_consuming_raises_the_backlog_alert(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    backlog: list[float] = []

    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("jobs in flight", at_least(queued=10, submitted=5))
        chaos.land(
            "the only worker stopped", lambda: chaos.farm.kill(chaos.workers[0], signal.SIGTERM)
        )
        # the rest of the jobs wait on the broker, past the rule's 500 messages
        chaos.alert_fires("FluxfarmQueueBacklog")
        prometheus = chaos.prometheus
        assert prometheus is not None
        backlog.append(prometheus.scalar("max(fluxfarm_broker_queue_depth)") or 0)
        chaos.start_worker("worker-b")
        chaos.when("every waiting job claimed", lambda s: s.get("queued", 0) == 0)
        chaos.alert_resolves("FluxfarmQueueBacklog")

    # Jobs waiting longer than the reaper's republish age get a second message each (500 a
    # pass), which would keep the backlog over the threshold after its jobs are gone: the
    # age here outlasts the wait for the alert
    with chaos_farm(
        tmp_path, broker_url=redis_broker.url, database_url=postgres, queued_republish_after_s=90
    ) as chaos:
        # one image each: the backlog is what this run is about, not the images' variety
        plain = [
            {"positivePrompt": f"a lighthouse at dusk, study {i}", "width": 512, "height": 512}
            for i in range(650)
        ]
        result = run_scenario("no worker consuming, then one", chaos, disrupt, requests=plain)
    (depth,) = backlog
    assert_held(result, report, int(depth), "messages waiting with no worker")


def test_postgresql_restart_mid_run(
    tmp_path: Path,
    private_postgres: PrivatePostgres,
    postgres: str,
    redis_broker: PrivateRedis,
    report: Reporter,
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("jobs in every state", lambda s: created(s) >= 40 and s.get("submitted", 0) >= 1)
        chaos.land("PostgreSQL stop", private_postgres.stop)
        # down until a producer has been refused: the outage met a submission
        chaos.until("a refused submission", lambda: chaos.refusals > 0, timeout=30)
        private_postgres.start()

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("PostgreSQL restart mid-run", chaos, disrupt, submit_per_s=20)
    (landing,) = result.landings
    assert_held(result, report, landing.in_flight, "in flight at the stop")
