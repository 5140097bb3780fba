"""The farm across hosts, for the multi-host scenarios (test_hosts.py) and the soak: a
store host (PostgreSQL and Redis), two worker hosts, two `web` hosts behind HAProxy, and
Runware's simulator, each in a network namespace of its own (tests/hosts.py).

The clients submit through the proxy with a bearer token, and Runware's webhooks come in
through it. A real Prometheus on this machine scrapes every web and worker across the
bridge and evaluates the chaos suite's alert rules.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine

from farmdomain.settings import Settings
from fluxfarm.processes import Farm
from fluxfarm_client import Client, Retries
from jobstore.api_tokens import ApiTokenStore
from tests.hosts import Network, Proxy, network, wait_proxy_ready
from tests.integration.chaos.harness import (
    ALERT_RULES,
    CHAOS_SETTINGS,
    SIMULATOR_KEY,
    WORKER_CONCURRENCY,
    ChaosFarm,
    ChaosResult,
    run_scenario,
)
from tests.metrics.prometheus_server import running_prometheus
from tests.private_servers import PrivatePostgres, PrivateRedis, running

WORKERS = ("worker-1", "worker-2")
WEBS = ("web-1", "web-2")
ROLES = ("store", *WORKERS, *WEBS, "proxy", "runware")
WEB_PORT = 8000
TENANT = "chaos"


@dataclass
class Topology:
    """The hosts and the servers that outlive each farm started on them."""

    net: Network
    postgres: PrivatePostgres
    broker: PrivateRedis
    proxy: Proxy


@contextlib.contextmanager
def topology(directory: Path) -> Iterator[Topology]:
    """The hosts, with PostgreSQL and Redis on the store host and HAProxy on its own, up
    for the block; `directory` holds the servers' data."""
    with network(ROLES) as net:
        store = net["store"].place
        postgres = PrivatePostgres(directory / "postgres", store)
        broker = PrivateRedis(directory / "redis", store)
        webs = [(web, f"{net[web].address}:{WEB_PORT}") for web in WEBS]
        proxy_dir = directory / "proxy"
        proxy_dir.mkdir(parents=True, exist_ok=True)
        proxy = Proxy(proxy_dir, net["proxy"], webs)
        with running(postgres), running(broker), running(proxy):
            yield Topology(net, postgres, broker, proxy)


@dataclass
class HostsFarm:
    chaos: ChaosFarm
    topology: Topology
    token: str

    @property
    def net(self) -> Network:
        return self.topology.net

    def run(
        self,
        scenario: str,
        disrupt: Callable[[ChaosFarm], None],
        jobs: int,
        **options: Any,
    ) -> ChaosResult:
        """run_scenario through the proxy: `options` are run_scenario's."""
        # a careful client over a flaky path: every failure is retried with the same key
        retries = Retries(attempts=200, statuses=frozenset({429, 502, 503, 504}), max_backoff_s=1)
        with Client(self.topology.proxy.url, self.token, timeout=10, retries=retries) as client:

            def submit(key: str, request: dict[str, Any]) -> str:
                return client.submit(request, idempotency_key=key).id

            return run_scenario(scenario, self.chaos, disrupt, jobs, submit=submit, **options)


@contextlib.contextmanager
def hosts_farm(workdir: Path, topology: Topology, database: str) -> Iterator[HostsFarm]:
    """Simulator, two webs, two workers and beat (on worker-2's host), each on its host,
    on a fresh `database` and an emptied broker, scraped by Prometheus."""
    net = topology.net
    database_url = topology.postgres.create_database(database)
    redis.Redis.from_url(topology.broker.url).flushall()
    ops_token = secrets.token_urlsafe(24)
    with Farm(Settings(data_dir=workdir), log_dir=workdir / "logs") as farm:
        latency = ("--latency-dist", "uniform", "--latency-min-s", "0", "--latency-max-s", "0.5")
        simulator_url = farm.start_simulator(
            "--api-keys",
            SIMULATOR_KEY,
            "--fast-images",
            "--random-seed",
            "7",
            *latency,
            host=net["runware"].place,
        )
        settings = Settings(
            data_dir=workdir,
            runware_url=f"{simulator_url}/v1",
            runware_api_key=SIMULATOR_KEY,
            public_base_url=topology.proxy.url,
            forwarded_allow_ips=net["proxy"].address,
            broker_url=topology.broker.url,
            database_url=database_url,
            ops_token=ops_token,
            **CHAOS_SETTINGS,
        )
        farm.settings = settings
        # started side by side: each waits for its own readiness
        with ThreadPoolExecutor() as pool:
            webs = [pool.submit(farm.start_web, WEB_PORT, web, net[web].place) for web in WEBS]
            started = [
                pool.submit(farm.start_worker, name, WORKER_CONCURRENCY, host=net[name].place)
                for name in WORKERS
            ]
            beat = pool.submit(farm.start_beat, net["worker-2"].place)
            workers = [future.result() for future in started]
            for future in (*webs, beat):
                future.result()
        farm.supervise()
        wait_proxy_ready(topology.proxy)
        engine = create_engine(database_url)
        _, token = ApiTokenStore(engine).create(TENANT, "hosts")
        engine.dispose()
        web_addresses = tuple(net[web].address for web in WEBS)
        chaos = ChaosFarm(
            farm, settings, simulator_url, WEB_PORT, workers=workers, web_addresses=web_addresses
        )
        try:
            with running_prometheus(
                workdir / "prometheus",
                chaos.scrape_targets(),
                rules=ALERT_RULES,
                bearer_token=ops_token,
            ) as chaos.prometheus:
                yield HostsFarm(chaos, topology, token)
        finally:
            chaos.close()
            net.heal()
