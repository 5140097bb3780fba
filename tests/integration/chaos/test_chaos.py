"""Every fault we can produce on one machine, 200 jobs each: none lost, none paid twice,
and each fault shown to have met work in flight (the table's "hit" column).

Faults are triggered on what the store shows the farm doing (K jobs submitted, M queued),
never after a sleep; the broker and store they break are the test's own.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from fluxfarm.processes import Child
from simulator.testing import OLD_SHAPE_FLAGS
from tests.integration.chaos.crashing_worker import hits
from tests.integration.chaos.harness import ChaosFarm, ChaosResult, chaos_farm, run_scenario
from tests.private_servers import PrivatePostgres, PrivateRabbitMQ, PrivateRedis

Reporter = Callable[[str], None]

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(480)]

CRASHING_APP = "tests.integration.chaos.crashing_worker"


def _assert_held(result: ChaosResult, report: Reporter, hit: int, what: str) -> None:
    report(result.row(f"{hit} {what}"))
    assert hit > 0, f"the fault met no work in flight ({what})"
    assert all(landing.in_flight > 0 for landing in result.landings), result.landings
    assert result.lost == 0, result.states
    assert result.paid_twice == 0
    assert result.duplicate_results == 0
    assert result.charged_usd == result.recorded_usd


def _live(chaos: ChaosFarm, name: str) -> Child | None:
    return next(
        (c for c in chaos.farm.children if c.name == name and c.process.poll() is None), None
    )


def _ready(chaos: ChaosFarm, name: str) -> Child | None:
    """The live process called `name`, once it has said it is ready."""
    found = _live(chaos, name)
    return found if found is not None and " ready." in found.log() else None


def _running(chaos: ChaosFarm, name: str) -> Child:
    found = _live(chaos, name)
    assert found is not None, f"no {name} is running"
    return found


def _at_least(**floors: int) -> Callable[[dict[str, int]], bool]:
    """A condition on the jobs by state: at least so many in each named state."""
    return lambda states: all(states.get(state, 0) >= n for state, n in floors.items())


def _created(states: dict[str, int]) -> int:
    return sum(states.values())


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
                    and _ready(chaos, "worker-a") is not None
                ),
            )
            # every planned crash is behind it: a ready worker-a no longer dies on its own
            worker = _ready(chaos, "worker-a")
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
    _assert_held(
        result, report, resubmitted, f"resubmitted ({len(windows)} crashes, {kills} kills)"
    )


def test_worker_sigterm_lets_in_flight_submits_finish(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("jobs mid-submit", _at_least(submitting=1, submitted=10))
        chaos.land("SIGTERM", lambda: chaos.farm.kill(chaos.workers[-1], signal.SIGTERM))
        chaos.start_worker("worker-b")

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("SIGTERM of the worker (rolling restart)", chaos, disrupt)
    (landing,) = result.landings
    # a warm shutdown finishes what it POSTs: nothing is left for the reaper to resubmit
    assert result.evidence["resubmitted"] == 0
    _assert_held(result, report, landing.in_flight, "in flight at the signal")


def test_rabbitmq_restart_mid_run(
    tmp_path: Path, postgres: str, rabbitmq_broker: PrivateRabbitMQ, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("a backlog on the broker", _at_least(queued=20, submitted=5))
        chaos.land("RabbitMQ stop", rabbitmq_broker.stop)
        rabbitmq_broker.start()

    with chaos_farm(tmp_path, broker_url=rabbitmq_broker.url, database_url=postgres) as chaos:
        result = run_scenario("RabbitMQ restart mid-run", chaos, disrupt)
    (landing,) = result.landings
    _assert_held(result, report, landing.states.get("queued", 0), "queued at the stop")


def test_redis_restart_mid_run_loses_messages_and_the_reaper_recovers(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("a backlog on the broker", _at_least(queued=20, submitted=5))
        chaos.land("Redis kill", redis_broker.kill)
        redis_broker.start()

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("Redis restart mid-run (queue lost)", chaos, disrupt)
    republished = result.evidence["republished"]
    _assert_held(result, report, republished, "republished (messages lost)")


def test_webhook_receiver_down_until_results_come_by_polling(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("jobs waiting for webhooks", _at_least(submitted=10))
        chaos.land("web down", lambda: chaos.farm.kill(_running(chaos, "web")))
        chaos.until("results by polling", lambda: chaos.evidence().polled_results >= 20)
        chaos.restart_web()

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("webhook receiver down", chaos, disrupt)
    polled = result.evidence.polled_results
    _assert_held(result, report, polled, "results by polling (`source: poll`)")


# the one scenario run again with the simulator's older answer shapes: it meets every one
# of them (acknowledgements, webhook bodies, results and errors by polling)
@pytest.mark.parametrize("shapes", [(), OLD_SHAPE_FLAGS], ids=["sdk-shapes", "old-shapes"])
def test_dropped_duplicated_and_reordered_webhooks(
    tmp_path: Path,
    postgres: str,
    redis_broker: PrivateRedis,
    report: Reporter,
    shapes: tuple[str, ...],
) -> None:
    flags = (
        "--webhook-drop-share",
        "0.2",
        "--webhook-duplicate-share",
        "0.2",
        "--webhook-reorder-max-s",
        "1.5",
        *shapes,
    )
    with chaos_farm(
        tmp_path, broker_url=redis_broker.url, database_url=postgres, simulator_flags=flags
    ) as chaos:
        older = ", older answer shapes" if shapes else ""
        result = run_scenario(
            f"webhooks 20 % dropped, 20 % duplicated, reordered{older}", chaos, lambda _c: None
        )
        stats = chaos.stats()
    assert stats["webhooks_duplicated"] > 0
    assert result.evidence.polled_results > 0  # what was dropped came by polling
    hit = stats["webhooks_dropped"] + stats["webhooks_duplicated"]
    _assert_held(result, report, hit, "webhooks dropped or duplicated")


def test_429_storm(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("jobs being submitted", _at_least(queued=10, submitted=10))
        chaos.land("429 on half of all submits", lambda: chaos.set_faults(submit_429_share=0.5))
        chaos.until("30 jobs refused", lambda: chaos.evidence()["retry:rate_limit"] >= 30)
        chaos.reset_faults()

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("429 on half of all submits", chaos, disrupt)
    refused = result.evidence["retry:rate_limit"]
    _assert_held(result, report, refused, "refused with 429, retried")


def test_postgresql_restart_mid_run(
    tmp_path: Path,
    private_postgres: PrivatePostgres,
    postgres: str,
    redis_broker: PrivateRedis,
    report: Reporter,
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when(
            "jobs in every state", lambda s: _created(s) >= 40 and s.get("submitted", 0) >= 1
        )
        chaos.land("PostgreSQL stop", private_postgres.stop)
        # down until a producer has been refused: the outage met a submission
        chaos.until("a refused submission", lambda: chaos.refusals > 0, timeout=30)
        private_postgres.start()

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("PostgreSQL restart mid-run", chaos, disrupt, submit_per_s=20)
    (landing,) = result.landings
    _assert_held(result, report, landing.in_flight, "in flight at the stop")


def test_submits_that_hang_past_the_client_timeout(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    flags = ("--submit-hang-share", "0.2", "--hang-s", "4")
    with chaos_farm(
        tmp_path, broker_url=redis_broker.url, database_url=postgres, simulator_flags=flags
    ) as chaos:
        result = run_scenario("20 % of submits hang past the timeout", chaos, lambda _c: None)
        # the worker gave up on these POSTs: each hang (4 s) outlasted its 1.5 s timeout
        timed_out = chaos.provider_requests("timeout")
    _assert_held(result, report, timed_out, "POSTs timed out")


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
        # every such POST had its tasks accepted (and billed): paid twice stays 0
        misanswered = chaos.provider_requests("500" if mode == "error" else "timeout")
    _assert_held(result, report, misanswered, f"accepted POSTs answered with {label}")
