"""Faults on Runware's side and the webhooks' path, 200 jobs each: the receiver down,
webhooks dropped, duplicated and reordered, 429 storms, submits hanging or accepted and
answered with a failure, and a quiet run. None lost, none paid twice, and each fault shown
to have met work in flight (the table's "hit" column); the alerts each raised, as in
test_chaos.py, and none in the quiet run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.testing import OLD_SHAPE_FLAGS
from tests.integration.chaos.checks import (
    Reporter,
    assert_held,
    assert_none_lost,
    at_least,
    running_child,
)
from tests.integration.chaos.harness import ChaosFarm, chaos_farm, run_scenario
from tests.private_servers import PrivateRedis

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(480)]


def test_webhook_receiver_down_until_results_come_by_polling(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("jobs waiting for webhooks", at_least(submitted=10))
        chaos.land("web down", lambda: chaos.farm.kill(running_child(chaos, "web")))
        chaos.until("results by polling", lambda: chaos.evidence().polled_results >= 20)
        chaos.alert_fires("FluxfarmWebhooksLost")
        chaos.restart_web()
        chaos.alert_resolves("FluxfarmWebhooksLost")

    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        result = run_scenario("webhook receiver down", chaos, disrupt)
    polled = result.evidence.polled_results
    assert_held(result, report, polled, "results by polling (`source: poll`)")


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
    assert_held(result, report, hit, "webhooks dropped or duplicated")


def test_429_storm(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("jobs being submitted", at_least(succeeded=10, submitted=1))
        chaos.land("429 on half of all submits", lambda: chaos.set_faults(submit_429_share=0.5))
        chaos.until("30 jobs refused", lambda: chaos.evidence()["retry:rate_limit"] >= 30)
        # the rules' alert for Runware's refusals: neither a failure (a refused submit is
        # retried until its deadline) nor a p95 over 300 s comes of a storm this short
        chaos.alert_fires("FluxfarmRunwarePushingBack")
        chaos.reset_faults()
        chaos.alert_resolves("FluxfarmRunwarePushingBack")

    # Runware's 429 names no Retry-After, so each pauses the fleet's claims for the first
    # backoff: here the production 1 s, since the chaos clock's 0.2 s pauses fall between
    # the readings (every 5 s) of the gauge the alert watches. Jobs keep coming meanwhile
    with chaos_farm(
        tmp_path, broker_url=redis_broker.url, database_url=postgres, retry_base_delay_s=1
    ) as chaos:
        result = run_scenario("429 on half of all submits", chaos, disrupt, submit_per_s=10)
    refused = result.evidence["retry:rate_limit"]
    assert_held(result, report, refused, "refused with 429, retried")


def test_a_quiet_run_raises_no_alert(
    tmp_path: Path, postgres: str, redis_broker: PrivateRedis, report: Reporter
) -> None:
    with chaos_farm(tmp_path, broker_url=redis_broker.url, database_url=postgres) as chaos:
        # paced to outlast every compressed `for:` window: an alert had time to fire
        result = run_scenario("no fault", chaos, lambda _c: None, jobs=100, submit_per_s=8)
    report(result.row("—"))
    assert result.alerts == []
    assert_none_lost(result)


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
    assert_held(result, report, timed_out, "POSTs timed out")


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
    assert_held(result, report, misanswered, f"accepted POSTs answered with {label}")
