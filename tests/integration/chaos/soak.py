"""A long run of steady load on the chaos suite's farm with a fault every few minutes;
not part of the suite: `.venv/bin/python -m tests.integration.chaos.soak --minutes 60`.

The load is half the farm's peak (measured first on a farm of the same layout, unless
--rate says), the demo's mix of requests. The faults take turns: a worker killed -9, the
broker (Redis, without persistence: its queue goes) killed and started again, the store
(PostgreSQL) stopped and started again, each on the private servers of the chaos suite.
Every minute prints the jobs created, succeeded and failed so far, those in flight, any
payment twice, the alerts firing and each process's memory; the end, once every job is
terminal, prints the run as a row of README's reliability table.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bench.procs import tree_usage
from farmdomain.jobs import JobState
from fluxfarm.demo import demo_requests
from producers.client import FluxfarmClient
from tests.integration.chaos.harness import IN_FLIGHT, ChaosFarm, chaos_farm, run_scenario
from tests.private_servers import PrivatePostgres, PrivateRedis, running, server_dir

MB = 1024 * 1024


@dataclass(frozen=True)
class Servers:
    """The private servers the faults break."""

    postgres: PrivatePostgres
    redis: PrivateRedis

    def farm(
        self, workdir: Path, name: str, redis_db: int
    ) -> contextlib.AbstractContextManager[ChaosFarm]:
        return chaos_farm(
            workdir / name,
            broker_url=self.redis.url.rsplit("/", 1)[0] + f"/{redis_db}",
            database_url=self.postgres.create_database(name),
        )


def _kill_worker(chaos: ChaosFarm) -> None:
    worker = next(c for c in chaos.workers if c.process.poll() is None)
    os.kill(worker.process.pid, signal.SIGKILL)  # the farm's supervisor starts it again


def _faults(servers: Servers) -> list[tuple[str, Callable[[ChaosFarm], None]]]:
    def restart_broker(_chaos: ChaosFarm) -> None:
        servers.redis.kill()
        servers.redis.start()

    def restart_store(_chaos: ChaosFarm) -> None:
        servers.postgres.stop()
        servers.postgres.start()

    return [
        ("kill -9 of the worker", _kill_worker),
        ("broker restart (Redis, queue lost)", restart_broker),
        ("store restart (PostgreSQL)", restart_store),
    ]


def half_peak(servers: Servers, workdir: Path, jobs: int) -> float:
    """Half the jobs/s, created to succeeded, of a burst through a farm like the soak's."""
    requests = demo_requests(jobs)
    with (
        servers.farm(workdir, "peak", redis_db=1) as chaos,
        FluxfarmClient(chaos.settings, tenant="peak") as client,
    ):
        job_ids = [
            job_id
            for start in range(0, jobs, 50)
            for job_id in client.submit_many(requests[start : start + 50])
        ]
        done = client.wait_all(job_ids, timeout=600, poll_interval=0.5)
    assert all(job.state is JobState.SUCCEEDED for job in done), "the peak run lost jobs"
    first = min(job.created_at for job in done)
    last = max(job.finished_at for job in done if job.finished_at)
    return jobs / (last - first).total_seconds() / 2


@dataclass
class Soak:
    """The disruption of the run: faults on a clock, and a line of figures every minute."""

    servers: Servers
    minutes: float
    fault_every_s: float
    # the processes of the memory columns, as the first line found them
    processes: list[str] = field(default_factory=list)

    def __call__(self, chaos: ChaosFarm) -> None:
        started = time.monotonic()
        length_s = self.minutes * 60
        # faults fall between the minute lines, so that a line shows each one's aftermath
        faults_at = itertools.takewhile(
            lambda at: at < length_s, itertools.count(self.fault_every_s / 2, self.fault_every_s)
        )
        lines_at = sorted({*range(60, int(length_s), 60), length_s})
        events = sorted([(at, True) for at in faults_at] + [(at, False) for at in lines_at])
        faults = itertools.cycle(_faults(self.servers))
        print(self._header(chaos), flush=True)
        for at, is_fault in events:
            time.sleep(max(0.0, started + at - time.monotonic()))
            if is_fault:
                name, fault = next(faults)
                landing = chaos.land(name, functools.partial(fault, chaos))
                print(f"  fault: {name} ({landing.in_flight} in flight)", flush=True)
            else:
                print(self._line(chaos, at / 60), flush=True)

    def _header(self, chaos: ChaosFarm) -> str:
        self.processes = sorted(_memory(chaos, self.servers))
        columns = ["minute", "created", "succeeded", "failed", "in flight", "paid twice"]
        columns += ["alerts firing", *(f"{name} MB" for name in self.processes)]
        return f"| {' | '.join(columns)} |\n|{'---|' * len(columns)}"

    def _line(self, chaos: ChaosFarm, minute: float) -> str:
        figures = _figures(chaos)
        rss = _memory(chaos, self.servers)
        # a process down at this minute (restarting after its fault) shows as "down"
        memory = " | ".join(
            f"{rss[name] / MB:.0f}" if name in rss else "down" for name in self.processes
        )
        prometheus = chaos.prometheus
        firing = sorted(
            name
            for name, state in (prometheus.active_alerts() if prometheus else {}).items()
            if state == "firing"
        )
        return f"| {round(minute, 1):g} | {figures} | {', '.join(firing) or 'none'} | {memory} |"


def _figures(chaos: ChaosFarm) -> str:
    """Created, succeeded, failed, in flight, paid twice: from the store and the simulator's
    bill. A task or an image billed beyond the jobs that reached Runware is paid twice:
    the bill is read first, so that every job it counts has left `queued` in the store."""
    stats = chaos.stats()
    by_state = chaos.states()
    try:
        with chaos.engine.connect() as conn:
            reached, images = conn.execute(
                text(
                    "SELECT count(*), coalesce(sum(number_results), 0) FROM jobs"
                    " WHERE state != 'queued'"
                )
            ).one()
    except DBAPIError:
        by_state = None
    if by_state is None:
        return "store down | | | | "
    paid_twice = max(0, stats["tasks_accepted"] - reached)
    paid_twice += max(0, stats["images_generated"] - images)
    in_flight = sum(by_state.get(state, 0) for state in IN_FLIGHT)
    failed = by_state.get("failed", 0) + by_state.get("canceled", 0)
    created = sum(by_state.values())
    return f"{created} | {by_state.get('succeeded', 0)} | {failed} | {in_flight} | {paid_twice}"


def _memory(chaos: ChaosFarm, servers: Servers) -> dict[str, int]:
    """Resident memory of each process tree of the farm and of the private servers."""
    trees = [(c.name, c.process.pid) for c in chaos.farm.children if c.process.poll() is None]
    for name, server in (("postgres", servers.postgres.server), ("redis", servers.redis.server)):
        if server.process is not None and server.running():
            trees.append((name, server.process.pid))
    usage: dict[str, int] = {}
    for name, pid in trees:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            usage[name] = usage.get(name, 0) + tree_usage(pid).rss_bytes
    return usage


@contextlib.contextmanager
def private_servers() -> Iterator[Servers]:
    with server_dir("postgres") as pg_dir, server_dir("redis") as redis_dir:
        servers = Servers(PrivatePostgres(pg_dir), PrivateRedis(redis_dir))
        with running(servers.postgres), running(servers.redis):
            yield servers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60, help="length of the load (60)")
    parser.add_argument("--fault-every-minutes", type=float, default=3, help="(3)")
    parser.add_argument("--rate", type=float, help="jobs/s (default: half the measured peak)")
    parser.add_argument("--peak-jobs", type=int, default=600, help="the peak burst's jobs")
    args = parser.parse_args(argv)
    with private_servers() as servers, tempfile.TemporaryDirectory(prefix="fluxfarm-soak-") as tmp:
        workdir = Path(tmp)
        rate = args.rate or half_peak(servers, workdir, args.peak_jobs)
        jobs = round(rate * args.minutes * 60)
        print(f"soak: {args.minutes:g} min at {rate:.1f} jobs/s ({jobs} jobs)", flush=True)
        mix = demo_requests(60)
        soak = Soak(servers, args.minutes, args.fault_every_minutes * 60)
        with servers.farm(workdir, "soak", redis_db=0) as chaos:
            result = run_scenario(
                f"soak: {args.minutes:g} min at {rate:.0f} jobs/s, a fault every "
                f"{args.fault_every_minutes:g} min",
                chaos,
                soak,
                requests=[mix[i % len(mix)] for i in range(jobs)],
                submit_per_s=rate,
                timeout=600,
            )
    faults = ", ".join(f"{landing.fault}: {landing.in_flight}" for landing in result.landings)
    print(f"faults (jobs in flight at each): {faults}")
    print(result.row(f"{len(result.landings)} faults"))
    print(f"charged {result.charged_usd} USD, recorded {result.recorded_usd} USD")
    held = result.lost == result.paid_twice == result.duplicate_results == 0
    return 0 if held and result.charged_usd == result.recorded_usd else 1


if __name__ == "__main__":
    sys.exit(main())
