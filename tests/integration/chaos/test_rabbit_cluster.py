"""The production broker under a node's death: a three-node RabbitMQ cluster of the test's
own with quorum queues, and the node leading the submit queue killed mid-run, while
submits are being refused and retried through Celery's delayed-delivery queues."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from farmdomain.broker import SUBMIT_QUEUE
from tests.integration.chaos.harness import ChaosFarm, chaos_farm, run_scenario
from tests.rabbit_cluster import RabbitCluster, rabbit_cluster
from tests.services import fresh_postgres_database

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(480)]


@pytest.fixture
def cluster() -> Iterator[RabbitCluster]:
    with rabbit_cluster() as cluster:
        yield cluster


@pytest.fixture
def store() -> Iterator[str]:
    """A database of the test's own on the machine's PostgreSQL, which this fault spares."""
    with fresh_postgres_database() as url:
        yield url


def test_the_node_leading_the_submit_queue_killed_mid_run(
    tmp_path: Path, store: str, cluster: RabbitCluster, report: Callable[[str], None]
) -> None:
    killed: list[str] = []  # the leader's node name

    def disrupt(chaos: ChaosFarm) -> None:
        leader = leaders[0]
        chaos.when(
            "a backlog on the broker and retries waiting in it",
            lambda s: (
                s.get("queued", 0) >= 20
                and s.get("submitted", 0) >= 5
                and chaos.evidence()["retry:rate_limit"] >= 5
            ),
        )
        killed.append(leader)
        chaos.land("kill -9 of the submit queue's leader", cluster.node(leader).kill)
        chaos.until("another leader", lambda: cluster.leader(SUBMIT_QUEUE) not in ("", leader))

    with chaos_farm(
        tmp_path, broker_url=cluster.url, database_url=store, broker_queue_type="quorum"
    ) as chaos:
        # countdown retries: they wait in quorum queues led by the same node
        chaos.set_faults(submit_429_share=0.2)
        # asked before any job is submitted: rabbitmqctl takes seconds, in which a backlog
        # drains (the workers declared the queue; only a fault moves its leader)
        leaders = [cluster.leader(SUBMIT_QUEUE)]
        assert leaders[0], "the submit queue has no leader"
        result = run_scenario(
            "RabbitMQ cluster, quorum queues: the submit queue's leader killed",
            chaos,
            disrupt,
        )
    (landing,) = result.landings
    queued = landing.states.get("queued", 0)
    report(result.row(f"{queued} queued at the kill"))
    assert queued > 0, "the kill met no work in flight"
    (leader,) = killed
    assert leader not in cluster.members()
    assert result.evidence["retry:rate_limit"] > 0
    assert (result.lost, result.paid_twice, result.duplicate_results) == (0, 0, 0), result.states
    assert result.charged_usd == result.recorded_usd
