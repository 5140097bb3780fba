"""A long run of steady load on the farm across hosts (hosts_farm.py) with a fault every
few minutes; not part of the suite: `.venv/bin/python -m tests.integration.chaos.soak
--minutes 60` (as root: the hosts are network namespaces).

The load is half the farm's peak (measured first on a farm of the same layout, unless
--rate says), the demo's mix of requests, submitted through the proxy. The faults take
turns: a worker killed -9, a worker host cut off and back, the broker (Redis, without
persistence: its queue goes) killed and started again, a `web` host cut off and back (the
proxy fails over), the store (PostgreSQL) stopped and started again. Every minute prints
the jobs created, succeeded and failed so far, those in flight, any payment twice, the
alerts firing and each process's memory; the end, once every job is terminal, prints the
run as a row of README's reliability table.
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
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bench.procs import tree_usage
from farmdomain.jobs import JobState
from fluxfarm.demo import demo_requests
from producers.client import FluxfarmClient
from tests.hosts import unavailable_reason
from tests.integration.chaos.harness import IN_FLIGHT, ChaosFarm
from tests.integration.chaos.hosts_farm import HostsFarm, Topology, hosts_farm, topology
from tests.private_servers import server_dir

MB = 1024 * 1024
# how long a cut host stays off the network
CUT_S = 20


def _kill_worker(hosts: HostsFarm, turn: int) -> None:
    # the farm's supervisor starts a worker again as a new child: a worker killed by an
    # earlier fault, or one that exited when the broker went, is found under its name
    names = {worker.name for worker in hosts.chaos.workers}
    deadline = time.monotonic() + 60
    while not (
        alive := [
            c for c in hosts.chaos.farm.children if c.name in names and c.process.poll() is None
        ]
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("no worker alive to kill for a minute")
        time.sleep(0.5)
    os.kill(alive[turn % len(alive)].process.pid, signal.SIGKILL)


def _cut(role: str) -> Callable[[HostsFarm, int], None]:
    def cut(hosts: HostsFarm, _turn: int) -> None:
        hosts.net.cut(role)
        time.sleep(CUT_S)
        hosts.net.reconnect(role)

    return cut


def _restart_broker(hosts: HostsFarm, _turn: int) -> None:
    hosts.topology.broker.kill()
    hosts.topology.broker.start()


def _restart_store(hosts: HostsFarm, _turn: int) -> None:
    hosts.topology.postgres.stop()
    hosts.topology.postgres.start()


FAULTS: list[tuple[str, Callable[[HostsFarm, int], None]]] = [
    ("kill -9 of a worker", _kill_worker),
    (f"worker-1's host cut off for {CUT_S} s", _cut("worker-1")),
    ("broker restart (Redis, queue lost)", _restart_broker),
    (f"web-1's host cut off for {CUT_S} s", _cut("web-1")),
    ("store restart (PostgreSQL)", _restart_store),
]


def half_peak(topology: Topology, workdir: Path, jobs: int) -> float:
    """Half the jobs/s, created to succeeded, of a burst through a farm like the soak's."""
    requests = demo_requests(jobs)
    with (
        hosts_farm(workdir / "peak", topology, "peak") as hosts,
        FluxfarmClient(hosts.chaos.settings, tenant="peak") as client,
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

    hosts: HostsFarm
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
        print(self._header(chaos), flush=True)
        try:
            self._run(chaos, started, events)
        except BaseException:
            # the load goes on until its end before the run raises this: say it now
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
            raise

    def _run(self, chaos: ChaosFarm, started: float, events: list[tuple[float, bool]]) -> None:
        faults = itertools.cycle(FAULTS)
        for turn, (at, is_fault) in enumerate(events):
            time.sleep(max(0.0, started + at - time.monotonic()))
            if is_fault:
                name, fault = next(faults)
                landing = chaos.land(name, functools.partial(fault, self.hosts, turn))
                print(f"  fault: {name} ({landing.in_flight} in flight)", flush=True)
            else:
                print(self._line(chaos, at / 60), flush=True)

    def _header(self, chaos: ChaosFarm) -> str:
        self.processes = sorted(_memory(chaos, self.hosts.topology))
        columns = ["minute", "created", "succeeded", "failed", "in flight", "paid twice"]
        columns += ["alerts firing", *(f"{name} MB" for name in self.processes)]
        return f"| {' | '.join(columns)} |\n|{'---|' * len(columns)}"

    def _line(self, chaos: ChaosFarm, minute: float) -> str:
        figures = _figures(chaos)
        rss = _memory(chaos, self.hosts.topology)
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


def _memory(chaos: ChaosFarm, topology: Topology) -> dict[str, int]:
    """Resident memory of each process tree of the farm and of the private servers."""
    trees = [(c.name, c.process.pid) for c in chaos.farm.children if c.process.poll() is None]
    for name, server in (("postgres", topology.postgres.server), ("redis", topology.broker.server)):
        if server.process is not None and server.running():
            trees.append((name, server.process.pid))
    usage: dict[str, int] = {}
    for name, pid in trees:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            usage[name] = usage.get(name, 0) + tree_usage(pid).rss_bytes
    return usage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60, help="length of the load (60)")
    parser.add_argument("--fault-every-minutes", type=float, default=3, help="(3)")
    parser.add_argument("--rate", type=float, help="jobs/s (default: half the measured peak)")
    parser.add_argument("--peak-jobs", type=int, default=600, help="the peak burst's jobs")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"soak: no test hosts: {reason}", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="fluxfarm-soak-") as tmp,
        server_dir("soak") as servers,
        topology(servers) as hosts_of,
    ):
        workdir = Path(tmp)
        rate = args.rate or half_peak(hosts_of, workdir, args.peak_jobs)
        jobs = round(rate * args.minutes * 60)
        print(f"soak: {args.minutes:g} min at {rate:.1f} jobs/s ({jobs} jobs)", flush=True)
        mix = demo_requests(60)
        with hosts_farm(workdir / "soak", hosts_of, "soak") as hosts:
            soak = Soak(hosts, args.minutes, args.fault_every_minutes * 60)
            result = hosts.run(
                f"soak: {args.minutes:g} min at {rate:.0f} jobs/s across hosts, a fault every "
                f"{args.fault_every_minutes:g} min",
                soak,
                jobs,
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
