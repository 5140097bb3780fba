"""The farm across hosts (hosts_farm.py) and partitions between them.

Each scenario cuts something off while the store shows work in flight, heals it on what
the farm did meanwhile, and counts what the cut hit; a host cut off is a scrape target
down, and Prometheus says so. The suite runs each with JOBS_IN_SUITE jobs;
FLUXFARM_TEST_HOSTS_JOBS=500 runs the full size README reports.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import text

from farmdomain.broker import SUBMIT_MANY_TASK, SUBMIT_TASK
from tests.hosts import unavailable_reason
from tests.integration.chaos.checks import Reporter, assert_held, at_least
from tests.integration.chaos.harness import ChaosFarm
from tests.integration.chaos.hosts_farm import WEBS, WORKERS, HostsFarm, Topology, hosts_farm
from tests.integration.chaos.hosts_farm import topology as hosts_topology
from tests.private_servers import server_dir

_UNAVAILABLE = unavailable_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,
    pytest.mark.hosts,
    pytest.mark.timeout(480),
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"no test hosts: {_UNAVAILABLE}"),
]

JOBS_IN_SUITE = 100
JOBS = int(os.environ.get("FLUXFARM_TEST_HOSTS_JOBS", JOBS_IN_SUITE))
BACKENDS = ("api", "webhooks")
_databases = itertools.count()


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    with server_dir("hosts") as directory, hosts_topology(directory) as made:
        yield made


@pytest.fixture
def hosts(tmp_path: Path, topology: Topology) -> Iterator[HostsFarm]:
    with hosts_farm(tmp_path, topology, f"hosts{next(_databases)}") as farm:
        yield farm


def _held_by(app: Celery, worker: str) -> set[str]:
    """The jobs whose submit messages `worker` is running or has reserved, by its own word."""
    # asked of that worker alone, the answer comes as soon as it replies
    inspect = app.control.inspect([f"{worker}@{socket.gethostname()}"], timeout=2, limit=1)
    held: set[str] = set()
    for replies in (inspect.active() or {}, inspect.reserved() or {}):
        for name, requests in replies.items():
            if not name.startswith(f"{worker}@"):
                continue
            for request in requests:
                args = request.get("args") or []
                if request.get("name") == SUBMIT_TASK and args:
                    held.add(str(args[0]))
                elif request.get("name") == SUBMIT_MANY_TASK and args:
                    held.update(str(claim[0]) for claim in args[0])
    return held


def _states_of(chaos: ChaosFarm, job_ids: set[str]) -> dict[str, str]:
    with chaos.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, state FROM jobs WHERE id = ANY(:ids)"), {"ids": list(job_ids)}
        )
        return {job_id: state for job_id, state in rows}


def test_worker_host_cut_off_mid_run_and_back(hosts: HostsFarm, report: Reporter) -> None:
    stranded: set[str] = set()
    recovered: list[int] = []

    def taken_over(chaos: ChaosFarm) -> int:
        # while its holder is cut off, only the other host can move a job on
        moved = ("submitted", "succeeded")
        return sum(state in moved for state in _states_of(chaos, stranded).values())

    def disrupt(chaos: ChaosFarm) -> None:
        app = Celery(broker=chaos.settings.broker_url)

        def waiting(job_ids: set[str]) -> set[str]:
            found = _states_of(chaos, job_ids).items()
            return {job for job, state in found if state in ("queued", "submitting")}

        def holding() -> bool:
            # jobs worker-1 holds that are still waiting for their submit
            stranded.clear()
            stranded.update(waiting(_held_by(app, "worker-1")))
            return bool(stranded) and at_least(queued=10, submitted=5)(chaos.states() or {})

        chaos.until("a backlog, and worker-1 holding jobs", holding)
        chaos.land("worker-1's host cut off", lambda: hosts.net.cut("worker-1"))
        # held and still waiting once it is cut: the jobs the cut took from the farm
        stranded.intersection_update(waiting(stranded))
        assert stranded, "every job worker-1 held moved on before the cut"
        chaos.until(
            "the other host took over every job worker-1 held",
            lambda: taken_over(chaos) == len(stranded),
            # the reaper's clocks, slower on a machine another run shares
            timeout=240,
        )
        recovered.append(taken_over(chaos))
        # the host is out of reach of Prometheus too: the on-call engineer is told
        chaos.alert_fires("FluxfarmTargetDown")
        hosts.net.reconnect("worker-1")
        chaos.alert_resolves("FluxfarmTargetDown")

    result = hosts.run("a worker host cut off and back", disrupt, JOBS)
    hit = f"jobs stranded on the cut host, {recovered[0]} taken over by the other while cut"
    assert_held(result, report, len(stranded), hit)


def test_web_host_cut_off_and_the_proxy_fails_over(hosts: HostsFarm, report: Reporter) -> None:
    proxy = hosts.topology.proxy
    before: dict[str, int] = {}
    during: dict[str, int] = {}

    def to_web_2(backend: str) -> int:
        return proxy.stats()[backend, "web-2"].sessions - before[backend]

    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("jobs waiting for webhooks", at_least(submitted=10))
        before.update({name: proxy.stats()[name, "web-2"].sessions for name in BACKENDS})
        chaos.land("web-1's host cut off", lambda: hosts.net.cut("web-1"))
        chaos.until("the proxy took web-1 out", lambda: proxy.status("web-1") == {"DOWN"})
        chaos.until(
            "webhooks and API calls through web-2 alone",
            lambda: to_web_2("webhooks") >= 20 and to_web_2("api") >= 5,
        )
        during.update({name: to_web_2(name) for name in BACKENDS})
        chaos.alert_fires("FluxfarmTargetDown")
        hosts.net.reconnect("web-1")
        chaos.until("the proxy put web-1 back", lambda: proxy.status("web-1") == {"UP"})
        chaos.alert_resolves("FluxfarmTargetDown")

    result = hosts.run("a `web` host cut off (the proxy fails over)", disrupt, JOBS)
    hit = f"webhooks and {during['api']} API calls to the other web while cut"
    assert_held(result, report, during["webhooks"], hit)


def test_web_hosts_cut_off_from_the_store(hosts: HostsFarm, report: Reporter) -> None:
    refused = 0

    def failed_deliveries(chaos: ChaosFarm) -> int:
        return int(chaos.stats()["webhook_failed_attempts"])

    def disrupt(chaos: ChaosFarm) -> None:
        nonlocal refused
        chaos.when("jobs waiting for webhooks", at_least(submitted=10))
        before = failed_deliveries(chaos)

        def cut() -> None:
            hosts.net.drop_between("store", WEBS)
            for web in WEBS:
                hosts.net.drop_between(web, ["store"])

        chaos.land("the webs cut from the store", cut)
        chaos.until("10 webhooks refused", lambda: failed_deliveries(chaos) - before >= 10)
        refused = failed_deliveries(chaos) - before
        hosts.net.restore_between("store", WEBS)
        for web in WEBS:
            hosts.net.restore_between(web, ["store"])

    result = hosts.run("the `web` hosts cut off from the store", disrupt, JOBS)
    assert_held(result, report, refused, "webhook deliveries refused, redelivered or polled")


def test_workers_cut_from_runware_mid_post(hosts: HostsFarm, report: Reporter) -> None:
    cut_at: list[datetime] = []

    def unanswered(chaos: ChaosFarm) -> int:
        """Jobs whose POST went out after the cut and timed out waiting for its answer."""
        with chaos.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT job_id, detail FROM events WHERE kind = 'retry_scheduled' AND at >= :at"
                ),
                {"at": cut_at[0]},
            ).all()
        details = [(job, json.loads(d) if isinstance(d, str) else d) for job, d in rows]
        return len({job for job, d in details if "ReadTimeout" in str(d.get("message"))})

    def accepted(chaos: ChaosFarm) -> int:
        return int(chaos.stats()["tasks_accepted"])

    def disrupt(chaos: ChaosFarm) -> None:
        chaos.when("a backlog being submitted", at_least(queued=10, submitted=5))
        # Runware's answers take a second on the way back, within the client's timeout:
        # a POST it has accepted is then still waiting for its answer when the path breaks.
        # Its images take longer than the timeout, so no webhook settles the job first
        chaos.set_faults(answer_delay_s=1.0, latency_min_s=3, latency_max_s=4)
        before = accepted(chaos)
        chaos.until(
            "POSTs Runware accepted, answers on the way", lambda: accepted(chaos) >= before + 3
        )
        cut_at.append(datetime.now(UTC))
        # the workers still reach Runware; what it sends back to them is dropped. Its
        # webhooks, to the proxy, still go out
        chaos.land(
            "Runware's answers to the workers dropped",
            lambda: hosts.net.drop_between("runware", WORKERS),
        )
        chaos.until("a POST Runware accepted, unanswered", lambda: unanswered(chaos) > 0)
        hosts.net.restore_between("runware", WORKERS)
        chaos.reset_faults()

    result = hosts.run("the workers cut from Runware mid-POST (answers lost)", disrupt, JOBS)
    hit = "jobs whose POST Runware accepted went unanswered"
    assert_held(result, report, unanswered(hosts.chaos), hit)
